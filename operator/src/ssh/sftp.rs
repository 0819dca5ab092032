//! The `sftp` subsystem: a plain filesystem SFTPv3 server over tokio::fs,
//! with relative paths resolved against the workspace's home directory.
//!
//! Limits: paths travel as UTF-8 strings (russh-sftp's API), so names that
//! are not valid UTF-8 are shown lossily and cannot be opened.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Largest read served at once (clients ask for 32–256 KiB).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries returned per READDIR.
const DIR_BATCH: usize = 128;

enum Open {
    File(tokio::fs::File),
    /// A directory: its entries are listed on the first READDIR, then handed
    /// out in batches.
    Dir {
        path: PathBuf,
        pending: Option<Vec<File>>,
    },
}

pub(crate) struct Sftp {
    home: PathBuf,
    handles: HashMap<String, Open>,
    next: u64,
}

impl Sftp {
    pub(crate) fn new(home: PathBuf) -> Self {
        Sftp {
            home,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        if p.is_empty() {
            self.home.clone()
        } else {
            self.home.join(p)
        }
    }

    fn add(&mut self, open: Open) -> String {
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), open);
        h
    }

    fn file(&mut self, handle: &str) -> Result<&mut tokio::fs::File, StatusCode> {
        match self.handles.get_mut(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(StatusCode::Failure),
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

fn code(e: &std::io::Error) -> StatusCode {
    match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    }
}

fn attrs_of(md: &std::fs::Metadata) -> FileAttributes {
    let mut a = FileAttributes::from(md);
    // russh-sftp's conversion marks everything that is not a directory a
    // regular file; the raw mode carries the real type (symlinks etc.).
    a.permissions = Some(md.mode());
    a
}

/// Lexical normalisation (no symlink resolution) for REALPATH of paths that
/// do not exist yet.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

async fn apply_attrs(path: &Path, attrs: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = attrs.size {
        let f = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        f.set_len(size).await?;
    }
    if let Some(mode) = attrs.permissions {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).await?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .or_else(|_| std::fs::File::open(path))?;
        let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
        let times = std::fs::FileTimes::new()
            .set_accessed(t(atime))
            .set_modified(t(mtime));
        tokio::task::spawn_blocking(move || f.set_times(times))
            .await
            .map_err(std::io::Error::other)??;
    }
    Ok(())
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let mut opts: std::fs::OpenOptions = pflags.into();
        if let Some(mode) = attrs.permissions {
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode & 0o7777);
        }
        let f = tokio::fs::OpenOptions::from(opts)
            .open(&path)
            .await
            .map_err(|e| code(&e))?;
        let handle = self.add(Open::File(f));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File(mut f)) => {
                f.flush().await.map_err(|e| code(&e))?;
                Ok(ok(id))
            }
            Some(Open::Dir { .. }) => Ok(ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let f = self.file(&handle)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| code(&e))?;
        let want = len.min(MAX_READ) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = f.read(&mut data[filled..]).await.map_err(|e| code(&e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 && want > 0 {
            return Err(StatusCode::Eof);
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let f = self.file(&handle)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| code(&e))?;
        f.write_all(&data).await.map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let md = tokio::fs::symlink_metadata(self.path(&path))
            .await
            .map_err(|e| code(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&md),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let md = tokio::fs::metadata(self.path(&path))
            .await
            .map_err(|e| code(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&md),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let md = match self.handles.get(&handle) {
            Some(Open::File(f)) => f.metadata().await.map_err(|e| code(&e))?,
            Some(Open::Dir { path, .. }) => {
                tokio::fs::metadata(path).await.map_err(|e| code(&e))?
            }
            None => return Err(StatusCode::Failure),
        };
        Ok(Attrs {
            id,
            attrs: attrs_of(&md),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        apply_attrs(&self.path(&path), &attrs)
            .await
            .map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let f = self.file(&handle)?;
        if let Some(size) = attrs.size {
            f.set_len(size).await.map_err(|e| code(&e))?;
        }
        if let Some(mode) = attrs.permissions {
            f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .await
                .map_err(|e| code(&e))?;
        }
        if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
            let std_file = f.try_clone().await.map_err(|e| code(&e))?.into_std().await;
            let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
            let times = std::fs::FileTimes::new()
                .set_accessed(t(atime))
                .set_modified(t(mtime));
            tokio::task::spawn_blocking(move || std_file.set_times(times))
                .await
                .map_err(|_| StatusCode::Failure)?
                .map_err(|e| code(&e))?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.path(&path);
        let md = tokio::fs::metadata(&path).await.map_err(|e| code(&e))?;
        if !md.is_dir() {
            return Err(StatusCode::NoSuchFile);
        }
        let handle = self.add(Open::Dir {
            path,
            pending: None,
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir { path, pending }) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure);
        };
        if pending.is_none() {
            let mut files = Vec::new();
            for dot in [".", ".."] {
                if let Ok(md) = tokio::fs::metadata(path.join(dot)).await {
                    files.push(File::new(dot, attrs_of(&md)));
                }
            }
            let mut rd = tokio::fs::read_dir(&*path).await.map_err(|e| code(&e))?;
            while let Some(entry) = rd.next_entry().await.map_err(|e| code(&e))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let attrs = match tokio::fs::symlink_metadata(entry.path()).await {
                    Ok(md) => attrs_of(&md),
                    Err(_) => FileAttributes::empty(),
                };
                files.push(File::new(name, attrs));
            }
            files.reverse();
            *pending = Some(files);
        }
        let list = pending.get_or_insert_with(Vec::new);
        if list.is_empty() {
            return Err(StatusCode::Eof);
        }
        let take = list.len().min(DIR_BATCH);
        let files: Vec<File> = list.drain(list.len() - take..).rev().collect();
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_file(self.path(&filename))
            .await
            .map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mut b = tokio::fs::DirBuilder::new();
        b.mode(attrs.permissions.map(|m| m & 0o7777).unwrap_or(0o777));
        b.create(self.path(&path)).await.map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_dir(self.path(&path))
            .await
            .map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = self.path(if path == "." { "" } else { &path });
        let real = match tokio::fs::canonicalize(&p).await {
            Ok(r) => r,
            Err(_) => normalize(&p),
        };
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        tokio::fs::rename(self.path(&oldpath), self.path(&newpath))
            .await
            .map_err(|e| code(&e))?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = tokio::fs::read_link(self.path(&path))
            .await
            .map_err(|e| code(&e))?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH's sftp-server swaps the arguments of SSH_FXP_SYMLINK (a
        // long-standing quirk every client follows): the first field is the
        // target, the second the link.
        tokio::fs::symlink(&linkpath, self.path(&targetpath))
            .await
            .map_err(|e| code(&e))?;
        Ok(ok(id))
    }
}
