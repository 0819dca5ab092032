//! Test fixture: a `moto_server` process (the moto project's AWS API
//! emulator) on a free loopback port, and the AWS infrastructure a template
//! needs created in it.
//!
//! Used by this crate's tests and by the operator's end-to-end tests; it
//! uses only `std` and the `moto_server` / `python3` (boto3, which moto
//! installs) executables. A missing `moto_server` is a test failure with the
//! install command, never a skip.
//!
//! moto's caveats (5.2): it accepts any static credentials but routes by
//! the SigV4 credential scope; it never runs tasks (a service's
//! runningCount jumps to desiredCount); it does not validate Fargate
//! CPU/memory, paginate, enforce the 10-name limit of DescribeServices or
//! honour client tokens, and it replaces a service created twice; it
//! answers an unimplemented operation with an HTML 500. Tests must not rely
//! on it for validation or convergence.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{AwsOptions, StaticCredentials};

/// Region the fixture uses.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
}

/// What [`Moto::setup`] created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Infrastructure {
    /// `vpc-…`.
    pub vpc: String,
    /// `subnet-…` in the VPC.
    pub subnet: String,
    /// `sg-…` in the VPC.
    pub security_group: String,
    /// ECS cluster name.
    pub cluster: String,
    /// `fs-…`.
    pub file_system: String,
}

const SETUP_PY: &str = r#"
import sys
import boto3
url, region = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=url, region_name=region,
          aws_access_key_id="testing", aws_secret_access_key="testing")
ec2 = boto3.client("ec2", **kw)
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="berth-workspaces", Description="Berth workspaces", VpcId=vpc)["GroupId"]
ecs = boto3.client("ecs", **kw)
cluster = ecs.create_cluster(clusterName="berth")["cluster"]["clusterName"]
efs = boto3.client("efs", **kw)
fs = efs.create_file_system(CreationToken="berth-home", Tags=[{"Key": "Name", "Value": "berth-home"}])["FileSystemId"]
print(f"vpc={vpc}\nsubnet={subnet}\nsecurity_group={sg}\ncluster={cluster}\nfile_system={fs}")
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port and waits
    /// until it answers. Panics with the install command when `moto_server`
    /// is missing.
    pub fn start() -> Moto {
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let child = match Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "moto_server is not installed (it is the AWS API emulator these tests run \
                     against): run  pip install 'moto[server]'"
                ),
                Err(e) => panic!("cannot start moto_server: {e}"),
            };
            let mut moto = Moto { child, port };
            match moto.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return moto,
                Err(e) => last_err = e,
            }
        }
        panic!("moto_server did not come up: {last_err}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited with {status}"));
            }
            if let Ok((200, _)) = self.http("GET", "/moto-api/data.json") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for moto_server".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Options for [`crate::connect`]: this endpoint, [`REGION`], dummy
    /// static credentials (moto routes by the SigV4 scope), SDK retries off
    /// (moto answers unimplemented operations with a 500).
    pub fn options(&self) -> AwsOptions {
        self.options_in(REGION)
    }

    /// [`Moto::options`] in another region (moto keeps each region's state
    /// apart, as AWS does).
    pub fn options_in(&self, region: &str) -> AwsOptions {
        AwsOptions {
            region: Some(region.into()),
            endpoint_url: Some(self.endpoint()),
            max_attempts: 1,
            static_credentials: Some(StaticCredentials {
                access_key_id: "testing".into(),
                secret_access_key: "testing".into(),
            }),
            ..AwsOptions::default()
        }
    }

    /// Creates a VPC, subnet, security group, ECS cluster `berth` and an EFS
    /// file system through moto's APIs (with boto3, which moto brings).
    pub fn setup(&self) -> Infrastructure {
        self.setup_in(REGION)
    }

    /// [`Moto::setup`] in another region.
    pub fn setup_in(&self, region: &str) -> Infrastructure {
        let out = Command::new("python3")
            .args(["-c", SETUP_PY, &self.endpoint(), region])
            .output()
            .expect("cannot run python3 (needed with boto3 for the moto fixture)");
        assert!(
            out.status.success(),
            "moto setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("moto setup printed no {key}: {text}"))
                .trim()
                .to_owned()
        };
        Infrastructure {
            vpc: get("vpc"),
            subnet: get("subnet"),
            security_group: get("security_group"),
            cluster: get("cluster"),
            file_system: get("file_system"),
        }
    }

    /// moto's whole state as JSON text (`GET /moto-api/data.json`).
    pub fn data_json(&self) -> String {
        let (status, body) = self
            .http("GET", "/moto-api/data.json")
            .expect("GET /moto-api/data.json");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Clears all of moto's state (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let (status, body) = self
            .http("POST", "/moto-api/reset")
            .expect("POST /moto-api/reset");
        assert_eq!(status, 200, "{body}");
    }

    /// A minimal HTTP/1.1 request to moto (`Connection: close`).
    fn http(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "malformed HTTP response".to_string())?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no HTTP status".to_string())?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(tail)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        body = tail.trim_start_matches("\r\n");
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`FaultProxy`] answers a request with instead of forwarding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 with the JSON error `ThrottlingException` (as ECS, EFS and
    /// Secrets Manager throttle).
    Throttle,
    /// HTTP 503 with an HTML body (a load balancer's error page).
    Unavailable,
    /// HTTP 500 with an HTML body (what moto answers for an unimplemented
    /// operation).
    ServerError,
}

/// A fault-injecting HTTP proxy in front of moto: the first requests get
/// the queued faults, the rest are forwarded. One request per connection
/// (`Connection: close`); the listener thread ends with the test process.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    faults: std::collections::VecDeque<Fault>,
    requests: usize,
    forwarded: usize,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (a [`Moto`]).
    pub fn start(upstream: &Moto) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let (shared, up) = (state.clone(), upstream.port);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, up, &shared);
                });
            }
        });
        FaultProxy { port, state }
    }

    /// The endpoint URL of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues faults for the next requests.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Requests received so far (faulted and forwarded).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// Requests forwarded to moto so far.
    pub fn forwarded(&self) -> usize {
        self.state.lock().unwrap().forwarded
    }
}

fn read_request(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
    }
}

fn proxy_one(
    mut conn: TcpStream,
    upstream: u16,
    state: &std::sync::Mutex<ProxyState>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = read_request(&mut conn)?;
    if request.is_empty() {
        return Ok(());
    }
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        let f = s.faults.pop_front();
        if f.is_none() {
            s.forwarded += 1;
        }
        f
    };
    let reply = |status: &str, ctype: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match fault {
        Some(Fault::Throttle) => conn.write_all(
            reply(
                "400 Bad Request",
                "application/x-amz-json-1.1",
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            )
            .as_bytes(),
        ),
        Some(Fault::Unavailable) => conn.write_all(
            reply(
                "503 Service Unavailable",
                "text/html",
                "<html><body>Service Unavailable</body></html>",
            )
            .as_bytes(),
        ),
        Some(Fault::ServerError) => conn.write_all(
            reply(
                "500 Internal Server Error",
                "text/html",
                "<html><body>Internal Server Error</body></html>",
            )
            .as_bytes(),
        ),
        None => {
            // Forward with `Connection: close` so the response ends at EOF.
            let text = String::from_utf8_lossy(&request).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let head: Vec<&str> = head
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .collect();
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            up.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(
                up,
                "{}\r\nConnection: close\r\n\r\n{body}",
                head.join("\r\n")
            )?;
            let mut response = Vec::new();
            up.read_to_end(&mut response)?;
            conn.write_all(&response)
        }
    }
}
