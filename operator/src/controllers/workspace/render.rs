//! Rendering a workspace into ECS/EFS requests: names, the task definition
//! and its content hash. Pure functions, so they are tested without I/O.
//!
//! The content hash covers everything that goes into the task definition
//! (image, CPU/memory, environment, parameters, scripts, the access point,
//! roles, log configuration) and nothing that changes per start: the agent
//! token travels through a secret the task definition references by ARN, so
//! stopping and starting a workspace registers no new revision.

use std::collections::BTreeMap;

use berth_cloud::ecs::{
    ContainerDefinition, EfsVolumeConfiguration, LogConfiguration, MountPoint,
    RegisterTaskDefinition, SecretEnv, Volume,
};
use berth_cloud::tags::{self, Tags};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::template::WorkspaceTemplateSpec;
use crate::api::workspace::{Resources, WorkspaceSpec};

/// The container's name inside the task definition.
pub const CONTAINER_NAME: &str = "workspace";
/// The environment variable carrying the per-start agent token.
pub const AGENT_TOKEN_ENV: &str = "BERTH_AGENT_TOKEN";

/// Identity of the workspace for naming and tagging.
#[derive(Clone, Debug)]
pub struct WorkspaceIdent<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Uid.
    pub uid: &'a str,
    /// The ECS service name its status records, when it has one: names
    /// given by earlier versions (`berth-<ns>-<name>`) are kept for the
    /// workspace's life, so an upgrade moves nothing and restarts nothing.
    pub recorded: Option<&'a str>,
}

impl WorkspaceIdent<'_> {
    /// The ECS service name and task definition family: the recorded one,
    /// else `berth-<ns>-<name>-<8 hex digits of the uid's SHA-256>`. The
    /// uid's hash makes it unambiguous (namespace `team-a` with `x` and
    /// `team` with `a-x` no longer meet) and new for a workspace made again with a
    /// deleted one's name (no wait for the old service to drain). Namespace
    /// and name are DNS labels (≤ 63 each), so it is a valid ECS name.
    pub fn family(&self) -> String {
        if let Some(r) = self.recorded.filter(|r| !r.is_empty()) {
            return r.to_string();
        }
        let h = hex::encode(Sha256::digest(self.uid.as_bytes()));
        format!("berth-{}-{}-{}", self.namespace, self.name, &h[..8])
    }

    /// Name of the Secrets Manager secret holding the agent token:
    /// `berth/<ns>/<name>/<uid>/agent-token`. By uid, so that a workspace
    /// made again with a deleted one's name never meets that one's secret
    /// (still being deleted by Secrets Manager, or left behind).
    pub fn secret_name(&self) -> String {
        format!(
            "berth/{}/{}/{}/agent-token",
            self.namespace, self.name, self.uid
        )
    }

    /// The name earlier versions gave the secret (`berth/<ns>/<name>/agent-token`),
    /// cleaned up with the workspace.
    pub fn legacy_secret_name(&self) -> String {
        format!("berth/{}/{}/agent-token", self.namespace, self.name)
    }

    /// Ownership tags for every cloud object of this workspace.
    pub fn tags(&self) -> Tags {
        tags::owner_tags(self.uid, self.namespace, self.name)
    }

    /// A client token derived from the uid and a purpose: 36 characters,
    /// the most ECS accepts (EFS takes up to 64).
    /// `attempt` moves on when the object was deleted behind Berth's back,
    /// so a create never reuses a token AWS already answered (attempt 0
    /// gives the token earlier versions used).
    pub fn client_token(&self, purpose: &str, attempt: u32) -> String {
        let seed = match attempt {
            0 => format!("{}/{purpose}", self.uid),
            n => format!("{}/{purpose}/{n}", self.uid),
        };
        let h = hex::encode(Sha256::digest(seed.as_bytes()));
        format!("berth-{}", &h[..30])
    }
}

/// The owner's home on the file system: `<efsRootDirectory>/<namespace>/<owner>`
/// (two organizations' users of one name never share a directory).
pub fn home_directory(template: &WorkspaceTemplateSpec, namespace: &str, owner: &str) -> String {
    let base = template
        .infrastructure
        .efs_root_directory
        .trim_end_matches('/');
    format!("{base}/{namespace}/{owner}")
}

/// The client token of a home's access point: from the file system,
/// namespace, owner and attempt (the workspaces sharing the home make the
/// same call, and EFS answers it with the same access point).
pub fn home_client_token(fs: &str, namespace: &str, owner: &str, attempt: i32) -> String {
    let h = hex::encode(Sha256::digest(
        format!("home/{fs}/{namespace}/{owner}/{attempt}").as_bytes(),
    ));
    format!("berth-{}", &h[..30])
}

/// The task size: the workspace's, else the template's default.
pub fn resources(ws: &WorkspaceSpec, template: &WorkspaceTemplateSpec) -> Resources {
    ws.resources.unwrap_or(template.resources.default)
}

fn param_env_name(name: &str) -> String {
    format!(
        "BERTH_PARAM_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How workspaces get and reach their agent: the operator's access URL
/// (the same for every replica, so nothing replica-specific enters the
/// rendered content) and the sha256 of the agent binary per architecture,
/// pinned into the task definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentDelivery {
    /// `--access-url`: how workspaces reach the API (`BERTH_API_URL`).
    pub access_url: String,
    /// sha256 of `GET /bin/berth-linux-<arch>`, by arch (`amd64`, `arm64`).
    pub digests: BTreeMap<String, String>,
}

/// The container's command: starts `berth agent`, which runs the
/// template's scripts (it gets them from the API), so no template value is
/// ever part of shell text. The program is the same for every workspace.
///
/// It uses the image's own `berth` when its sha256 is the one pinned in
/// `BERTH_AGENT_SHA256_<ARCH>` (or when nothing is pinned); otherwise it
/// fetches `$BERTH_API_URL/bin/berth-linux-<arch>` with curl or wget,
/// checks the digest, and retries (with a growing pause, at most 30 s)
/// until it gets the right binary, as Coder's init script does. What it
/// needs from the image: `/bin/sh`, `uname`, `sha256sum` (or `shasum`), and
/// curl or wget when the image has no matching `berth`.
pub const BOOTSTRAP: &str = r#"set -u
case "$(uname -m)" in
  x86_64|amd64) arch=amd64; want="${BERTH_AGENT_SHA256_AMD64:-}" ;;
  aarch64|arm64) arch=arm64; want="${BERTH_AGENT_SHA256_ARM64:-}" ;;
  *) echo "berth: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
digest() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else echo none; fi
}
own="$(command -v berth 2>/dev/null || true)"
if [ -n "$own" ] && { [ -z "$want" ] || [ "$(digest "$own")" = "$want" ]; }; then
  exec "$own" agent
fi
if [ -z "$want" ]; then
  echo "berth: the image has no berth binary and the operator pins none for $arch (see --agent-binary-dir)" >&2
  exit 1
fi
dir="${TMPDIR:-/tmp}/berth-agent"
mkdir -p "$dir"
bin="$dir/berth"
url="${BERTH_API_URL%/}/bin/berth-linux-$arch"
n=0
while :; do
  rm -f "$bin.part"
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --connect-timeout 10 --max-time 300 -o "$bin.part" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -T 10 -O "$bin.part" "$url"
  else
    echo "berth: the image has neither curl nor wget to fetch the agent from $url" >&2
    exit 1
  fi
  got=$?
  if [ "$got" -eq 0 ]; then
    sum="$(digest "$bin.part")"
    if [ "$sum" = "$want" ]; then
      chmod 0755 "$bin.part" && mv -f "$bin.part" "$bin" && exec "$bin" agent
    fi
    echo "berth: $url has sha256 $sum, not the pinned $want" >&2
  else
    echo "berth: fetching $url failed (exit $got)" >&2
  fi
  n=$((n + 1))
  pause=$((n * 2))
  [ "$pause" -gt 30 ] && pause=30
  echo "berth: retrying in $pause s (attempt $n)" >&2
  sleep "$pause"
done
"#;

/// Parameter values with the template's defaults filled in.
pub fn effective_parameters(
    ws: &WorkspaceSpec,
    template: &WorkspaceTemplateSpec,
) -> BTreeMap<String, Value> {
    template
        .parameters
        .iter()
        .filter_map(|p| {
            ws.parameters
                .get(&p.name)
                .or(p.default.as_ref())
                .map(|v| (p.name.clone(), v.clone()))
        })
        .collect()
}

/// Everything needed to register the workspace's task definition.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The request (tags include the content hash).
    pub request: RegisterTaskDefinition,
    /// Hash of the content (without tags).
    pub hash: String,
}

/// Renders the task definition of a workspace.
#[allow(clippy::too_many_arguments)]
pub fn task_definition(
    id: &WorkspaceIdent<'_>,
    ws: &WorkspaceSpec,
    template: &WorkspaceTemplateSpec,
    template_version: i32,
    access_point_id: &str,
    agent_secret_arn: &str,
    agent: &AgentDelivery,
) -> Rendered {
    let res = resources(ws, template);
    let mut env: BTreeMap<String, String> = template.container.env.clone();
    for (k, v) in effective_parameters(ws, template) {
        env.insert(param_env_name(&k), value_string(&v));
    }
    env.insert("BERTH_WORKSPACE".into(), id.name.into());
    env.insert("BERTH_NAMESPACE".into(), id.namespace.into());
    env.insert("BERTH_OWNER".into(), ws.owner.clone());
    env.insert("BERTH_TEMPLATE".into(), ws.template.name.clone());
    env.insert(
        "BERTH_TEMPLATE_VERSION".into(),
        template_version.to_string(),
    );
    env.insert("HOME".into(), template.container.home_path.clone());
    // Where the operator serves this workspace's apps (an app's base path
    // is this plus its slug and `/`), e.g. for `code serve-web --server-base-path`.
    env.insert(
        "BERTH_APPS_PATH".into(),
        crate::server::apps::app_path(&ws.owner, id.namespace, id.name, "")
            .trim_end_matches('/')
            .to_string(),
    );
    if !agent.access_url.is_empty() {
        env.insert(
            "BERTH_API_URL".into(),
            agent.access_url.trim_end_matches('/').into(),
        );
    }
    for (arch, sum) in &agent.digests {
        env.insert(
            format!("BERTH_AGENT_SHA256_{}", arch.to_ascii_uppercase()),
            sum.clone(),
        );
    }
    env.insert(
        "BERTH_STOP_TIMEOUT".into(),
        template.container.stop_timeout.to_string(),
    );
    let mut secrets: Vec<SecretEnv> = template
        .container
        .secrets
        .iter()
        .map(|(k, v)| SecretEnv {
            name: k.clone(),
            value_from: v.clone(),
        })
        .collect();
    secrets.push(SecretEnv {
        name: AGENT_TOKEN_ENV.into(),
        value_from: agent_secret_arn.into(),
    });
    let inf = &template.infrastructure;
    let log_configuration = inf.log_group.as_ref().map(|g| LogConfiguration {
        log_driver: "awslogs".into(),
        options: BTreeMap::from([
            ("awslogs-group".to_string(), g.clone()),
            ("awslogs-region".to_string(), inf.region.clone()),
            (
                "awslogs-stream-prefix".to_string(),
                format!("{}-{}", id.namespace, id.name),
            ),
        ]),
    });
    let container = ContainerDefinition {
        name: CONTAINER_NAME.into(),
        image: template.container.image.clone(),
        essential: true,
        entry_point: vec!["/bin/sh".into(), "-c".into()],
        command: vec![BOOTSTRAP.into()],
        environment: env,
        secrets,
        mount_points: vec![MountPoint {
            source_volume: "home".into(),
            container_path: template.container.home_path.clone(),
            read_only: false,
        }],
        stop_timeout: Some(template.container.stop_timeout),
        user: Some(format!(
            "{}:{}",
            template.container.uid, template.container.gid
        )),
        working_directory: Some(template.container.home_path.clone()),
        log_configuration,
        init_process_enabled: true,
        repository_credentials: template
            .container
            .repository_credentials
            .as_ref()
            .map(|r| r.credentials_parameter.clone()),
    };
    let mut request = RegisterTaskDefinition {
        family: id.family(),
        cpu: res.cpu,
        memory: res.memory,
        execution_role_arn: Some(inf.execution_role_arn.clone()),
        task_role_arn: inf.task_role_arn.clone(),
        container_definitions: vec![container],
        volumes: vec![Volume {
            name: "home".into(),
            efs_volume_configuration: Some(EfsVolumeConfiguration {
                file_system_id: inf.file_system_id.clone(),
                root_directory: None,
                transit_encryption: true,
                access_point_id: Some(access_point_id.into()),
                iam_authorization: inf.efs_iam_authorization,
            }),
        }],
        tags: Tags::new(),
    };
    let hash = content_hash(&request);
    request.tags = id.tags();
    request.tags.insert(tags::CONTENT_HASH.into(), hash.clone());
    Rendered { request, hash }
}

/// Hash of a task definition's content (tags excluded).
pub fn content_hash(req: &RegisterTaskDefinition) -> String {
    let mut r = req.clone();
    r.tags.clear();
    let bytes = serde_json::to_vec(&r).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> WorkspaceTemplateSpec {
        let doc = crate::api::yaml::parse_documents(include_str!(
            "../../../../manifests/examples/10-dev-container.yaml"
        ))
        .unwrap();
        serde_json::from_value(doc[0]["spec"].clone()).unwrap()
    }

    fn ws(extra: serde_json::Value) -> WorkspaceSpec {
        let mut v = serde_json::json!({"owner": "alice", "template": {"name": "dev-container"}});
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    const ID: WorkspaceIdent<'static> = WorkspaceIdent {
        namespace: "default",
        name: "alice",
        uid: "u-1",
        recorded: None,
    };

    #[test]
    fn the_same_inputs_render_the_same_hash_and_a_token_secret_does_not_enter_it() {
        let a = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "arn:secret:1",
            &AgentDelivery {
                access_url: "http://api".into(),
                ..Default::default()
            },
        );
        let b = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "arn:secret:1",
            &AgentDelivery {
                access_url: "http://api".into(),
                ..Default::default()
            },
        );
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.request.tags.get(tags::CONTENT_HASH), Some(&a.hash));
        let env = &a.request.container_definitions[0].environment;
        assert!(
            !env.keys().any(|k| k.contains("TOKEN")),
            "the token travels as a secret reference"
        );
        assert!(a.request.container_definitions[0]
            .secrets
            .iter()
            .any(|s| s.name == AGENT_TOKEN_ENV));
    }

    #[test]
    fn cpu_parameters_and_template_version_change_the_hash() {
        let base = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        let cpu = task_definition(
            &ID,
            &ws(serde_json::json!({"resources": {"cpu": 1024, "memory": 2048}})),
            &template(),
            1,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        let param = task_definition(
            &ID,
            &ws(serde_json::json!({"parameters": {"enable_vscode_web": true}})),
            &template(),
            1,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        let version = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            2,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        for other in [&cpu, &param, &version] {
            assert_ne!(base.hash, other.hash);
        }
        assert_eq!((cpu.request.cpu, cpu.request.memory), (1024, 2048));
    }

    #[test]
    fn the_container_command_is_the_same_for_every_template_so_no_template_text_is_shell() {
        let mut t = template();
        t.scripts[0].script =
            "echo one > \"$MARK/ran\"\nBERTH_SCRIPT_EOF\ntouch \"$MARK/last-line\"\n".into();
        t.scripts[0].display_name = "$(touch \"$MARK/pwned-too\") it's".into();
        let evil = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &t,
            1,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        let plain = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "s",
            &AgentDelivery::default(),
        );
        let c = &evil.request.container_definitions[0];
        assert_eq!(c.entry_point, ["/bin/sh", "-c"]);
        assert_eq!(c.command, [BOOTSTRAP]);
        assert_eq!(
            c.command, plain.request.container_definitions[0].command,
            "scripts reach the agent through the API, never the command"
        );
        assert!(!c.command[0].contains("pwned") && !c.command[0].contains("BERTH_SCRIPT_EOF"));
        assert!(
            c.init_process_enabled,
            "an init process reaps and forwards signals"
        );
    }

    /// A one-thread HTTP server answering each request with the next body.
    fn serve(bodies: Vec<Vec<u8>>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for (i, stream) in l.incoming().enumerate() {
                let Ok(mut s) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = &bodies[i.min(bodies.len() - 1)];
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        (url, hits)
    }

    fn run_bootstrap(
        dir: &std::path::Path,
        path: &str,
        url: &str,
        want: &str,
    ) -> std::process::Output {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(BOOTSTRAP)
            .env_clear()
            .env("PATH", path)
            .env("TMPDIR", dir)
            .env("MARK", dir)
            .env("BERTH_API_URL", url)
            .env("BERTH_AGENT_SHA256_AMD64", want)
            .env("BERTH_AGENT_SHA256_ARM64", want);
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }

    const FAKE_AGENT: &[u8] = b"#!/bin/sh\necho \"$0 $*\" > \"$MARK/exec\"\n";

    #[test]
    fn the_bootstrap_fetches_the_agent_refuses_a_wrong_digest_and_execs_the_right_binary() {
        let dir = tempfile::tempdir().unwrap();
        let want = hex::encode(Sha256::digest(FAKE_AGENT));
        let (url, hits) = serve(vec![
            b"#!/bin/sh\necho tampered\n".to_vec(),
            FAKE_AGENT.to_vec(),
        ]);
        let out = run_bootstrap(dir.path(), "/usr/bin:/bin", &format!("{url}/"), &want);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("not the pinned"), "{stderr}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{stderr}"
        );
        let exec = std::fs::read_to_string(dir.path().join("exec")).unwrap();
        assert!(exec.ends_with("berth-agent/berth agent\n"), "{exec:?}");
    }

    #[test]
    fn the_bootstrap_uses_the_images_berth_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("berth"), FAKE_AGENT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("berth"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let want = hex::encode(Sha256::digest(FAKE_AGENT));
        let path = format!("{}:/usr/bin:/bin", bin.display());
        // Nothing listens there: a fetch would fail.
        let out = run_bootstrap(dir.path(), &path, "http://127.0.0.1:9", &want);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exec = std::fs::read_to_string(dir.path().join("exec")).unwrap();
        assert_eq!(exec, format!("{} agent\n", bin.join("berth").display()));
    }

    #[test]
    fn the_agent_binary_digest_and_access_url_are_pinned_in_the_environment() {
        let agent = AgentDelivery {
            access_url: "https://berth.example.com/".into(),
            digests: BTreeMap::from([("amd64".to_string(), "ab12".to_string())]),
        };
        let r = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "s",
            &agent,
        );
        let env = &r.request.container_definitions[0].environment;
        assert_eq!(env["BERTH_API_URL"], "https://berth.example.com");
        assert_eq!(env["BERTH_AGENT_SHA256_AMD64"], "ab12");
        assert_eq!(env["BERTH_STOP_TIMEOUT"], "60");
        let other = AgentDelivery {
            digests: BTreeMap::from([("amd64".to_string(), "cd34".to_string())]),
            ..agent
        };
        let r2 = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "s",
            &other,
        );
        assert_ne!(r.hash, r2.hash, "a new agent binary is a new revision");
    }

    #[test]
    fn the_home_is_the_owners_directory_mounted_through_the_access_point() {
        let r = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-9",
            "s",
            &AgentDelivery::default(),
        );
        let vol = r.request.volumes[0]
            .efs_volume_configuration
            .as_ref()
            .unwrap();
        assert_eq!(vol.access_point_id.as_deref(), Some("fsap-9"));
        assert!(vol.transit_encryption);
        assert_eq!(
            r.request.container_definitions[0].mount_points[0].container_path,
            "/home/ansible/source"
        );
        assert_eq!(home_directory(&template(), "team", "alice"), "/team/alice");
        assert_eq!(
            r.request.container_definitions[0].environment["BERTH_PARAM_ENABLE_VSCODE_WEB"],
            "false"
        );
    }

    /// IAM's wildcards: `*` any run of characters, `?` one.
    fn iam_glob(pattern: &str, s: &str) -> bool {
        let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
        let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
        while si < s.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = si;
                pi += 1;
            } else if let Some(st) = star {
                pi = st + 1;
                mark += 1;
                si = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }

    fn strings(v: &serde_json::Value) -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
            _ => vec![],
        }
    }

    fn allowed(policy: &str, action: &str, resource: &str) -> bool {
        let p: serde_json::Value = serde_json::from_str(policy).unwrap();
        p["Statement"].as_array().unwrap().iter().any(|st| {
            st["Effect"] == "Allow"
                && strings(&st["Action"]).iter().any(|a| iam_glob(a, action))
                && strings(&st["Resource"])
                    .iter()
                    .any(|r| iam_glob(r, resource))
        })
    }

    #[test]
    fn iam_wildcards_match_as_iam_does() {
        assert!(iam_glob(
            "arn:aws:iam::*:role/berth-*",
            "arn:aws:iam::1:role/berth-x"
        ));
        assert!(!iam_glob(
            "arn:aws:iam::*:role/berth-*",
            "arn:aws:iam::1:role/Coder"
        ));
        assert!(iam_glob("a?c", "abc") && !iam_glob("a?c", "ac"));
    }

    /// The example template, rendered, passes only what the shipped
    /// policies allow: the operator may pass its roles to ECS, and the
    /// workspace execution role may read every secret the task definition
    /// names (its own variables, the registry credentials, the agent token).
    #[test]
    fn every_arn_the_example_template_passes_is_allowed_by_the_shipped_policies() {
        let operator = include_str!("../../../../manifests/deploy/iam-policy.json");
        let execution =
            include_str!("../../../../manifests/deploy/workspace-execution-role-policy.json");
        let t = template();
        let agent_secret = format!(
            "arn:aws:secretsmanager:{}:271851283454:secret:{}-AbCdEf",
            t.infrastructure.region,
            ID.secret_name()
        );
        let r = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &t,
            1,
            "fsap-1",
            &agent_secret,
            &AgentDelivery::default(),
        );
        let req = r.request;
        let roles: Vec<String> = [req.execution_role_arn.clone(), req.task_role_arn.clone()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(roles.len(), 2);
        for role in roles {
            assert!(allowed(operator, "iam:PassRole", &role), "PassRole {role}");
        }
        let c = &req.container_definitions[0];
        assert!(
            c.repository_credentials.is_some(),
            "the example's image is on a private registry"
        );
        let secrets: Vec<String> = c
            .secrets
            .iter()
            .map(|s| s.value_from.clone())
            .chain(c.repository_credentials.clone())
            .collect();
        assert!(secrets.len() >= 3, "{secrets:?}");
        for arn in secrets {
            assert!(
                allowed(execution, "secretsmanager:GetSecretValue", &arn),
                "GetSecretValue {arn}"
            );
        }
        // The home is mounted with IAM authorization by the task role.
        let vol = req.volumes[0].efs_volume_configuration.as_ref().unwrap();
        assert!(vol.iam_authorization && req.task_role_arn.is_some());
    }
}
