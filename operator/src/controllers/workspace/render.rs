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
}

impl WorkspaceIdent<'_> {
    /// `berth-<ns>-<name>`: the ECS service name and task definition family.
    /// Both are DNS labels, so the result is a valid ECS name (≤ 255).
    pub fn family(&self) -> String {
        format!("berth-{}-{}", self.namespace, self.name)
    }

    /// Name of the Secrets Manager secret holding the agent token.
    pub fn secret_name(&self) -> String {
        format!("berth/{}/{}/agent-token", self.namespace, self.name)
    }

    /// Ownership tags for every cloud object of this workspace.
    pub fn tags(&self) -> Tags {
        tags::owner_tags(self.uid, self.namespace, self.name)
    }

    /// A client token derived from the uid and a purpose: 36 characters,
    /// the most ECS accepts (EFS takes up to 64).
    pub fn client_token(&self, purpose: &str) -> String {
        let h = hex::encode(Sha256::digest(format!("{}/{purpose}", self.uid).as_bytes()));
        format!("berth-{}", &h[..30])
    }
}

/// The owner's directory on the file system: `<efsRootDirectory>/<owner>`.
pub fn root_directory(template: &WorkspaceTemplateSpec, owner: &str) -> String {
    let base = template
        .infrastructure
        .efs_root_directory
        .trim_end_matches('/');
    format!("{base}/{owner}")
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

/// Quotes `s` for a POSIX shell: the result is one word whose value is `s`,
/// whatever it contains.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The startup program, until the workspace agent runs the scripts: the
/// template's scripts in order (those whose `when` parameter is false are
/// left out), `blocksLogin` ones one after another, the others in the
/// background; on SIGTERM the `runOnStop` scripts run, then every script
/// still running gets SIGTERM and is waited for (the container's stop
/// timeout applies). Every template value enters the program as one
/// single-quoted word (script bodies are written with `printf '%s'`, never
/// through a heredoc), so no script text or display name is ever run by the
/// top-level shell. The trap is installed before any script runs, and
/// blocking scripts are waited for with `wait`, so a stop during a long
/// blocking script is prompt; the PIDs are tracked explicitly, since
/// `$(jobs -p)` is empty in a trap under dash.
pub fn startup_program(ws: &WorkspaceSpec, template: &WorkspaceTemplateSpec) -> String {
    let params = effective_parameters(ws, template);
    let enabled = |s: &&crate::api::template::Script| {
        s.when
            .as_ref()
            .is_none_or(|w| params.get(w) == Some(&Value::Bool(true)))
    };
    let mut out = String::from(
        "set -u\nd=\"${BERTH_SCRIPTS_DIR:-/tmp/berth-scripts}\"\nmkdir -p \"$d\"\npids=''\nberth_stop() {\n  trap '' TERM INT\n",
    );
    let scripts: Vec<_> = template.scripts.iter().filter(enabled).collect();
    for (i, s) in scripts.iter().enumerate().filter(|(_, s)| s.run_on_stop) {
        let file = shell_quote(&format!("{i:02}-{}.sh", s.name));
        out.push_str(&format!(
            "  echo {}\n  /bin/sh \"$d\"/{file} || echo {}\n",
            shell_quote(&format!("berth: running stop script {}", s.name)),
            shell_quote(&format!("berth: stop script {} failed", s.name)),
        ));
    }
    out.push_str("  for p in $pids; do kill -TERM \"$p\" 2>/dev/null || true; done\n  wait\n  exit 0\n}\ntrap berth_stop TERM INT\n");
    for (i, s) in scripts.iter().enumerate() {
        let file = shell_quote(&format!("{i:02}-{}.sh", s.name));
        out.push_str(&format!(
            "printf '%s\\n' {} > \"$d\"/{file}\n",
            shell_quote(s.script.trim_end())
        ));
    }
    for (i, s) in scripts.iter().enumerate().filter(|(_, s)| !s.run_on_stop) {
        let file = shell_quote(&format!("{i:02}-{}.sh", s.name));
        let label = if s.display_name.is_empty() {
            &s.name
        } else {
            &s.display_name
        };
        out.push_str(&format!(
            "echo {}\n",
            shell_quote(&format!("berth: running script {label}"))
        ));
        if s.blocks_login {
            out.push_str(&format!(
                "/bin/sh \"$d\"/{file} & p=$!; pids=\"$pids $p\"; wait \"$p\" || echo {} \"$?\"\n",
                shell_quote(&format!("berth: script {} failed with", s.name))
            ));
        } else {
            out.push_str(&format!("/bin/sh \"$d\"/{file} & pids=\"$pids $!\"\n"));
        }
    }
    out.push_str("echo 'berth: startup scripts done'\nwhile :; do sleep 3600 & p=$!; pids=\"$pids $p\"; wait \"$p\"; done\n");
    out
}

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
        command: vec![startup_program(ws, template)],
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
                iam_authorization: false,
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

    fn run_program(program: &str, dir: &std::path::Path) -> std::process::Child {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(program)
            .env("BERTH_SCRIPTS_DIR", dir.join("scripts"))
            .env("MARK", dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_for(path: &std::path::Path) -> bool {
        for _ in 0..100 {
            if path.exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn no_script_body_or_display_name_runs_in_the_top_level_shell() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = template();
        t.scripts.truncate(1);
        t.scripts[0].script =
            "echo one > \"$MARK/ran\"\nBERTH_SCRIPT_EOF\ntouch \"$MARK/last-line\"\n".into();
        t.scripts[0].display_name = "$(touch \"$MARK/pwned-too\") it's".into();
        let program = startup_program(&ws(serde_json::json!({})), &t);
        let mut child = run_program(&program, dir.path());
        assert!(wait_for(&dir.path().join("ran")), "the script itself ran");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
        assert!(
            dir.path().join("last-line").exists(),
            "the whole body is one script, its last lines included"
        );
        assert!(
            !dir.path().join("pwned-too").exists(),
            "the display name was executed"
        );
        let written = std::fs::read_to_string(dir.path().join("scripts/00-persist.sh")).unwrap();
        assert!(
            written.contains("BERTH_SCRIPT_EOF\n"),
            "the body is written verbatim"
        );
    }

    #[test]
    fn sigterm_during_a_long_blocking_script_runs_the_stop_hooks_and_the_scripts_traps() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = template();
        t.scripts.truncate(1);
        t.scripts[0].script = "trap 'echo cleaned > \"$MARK/cleanup\"; exit 0' TERM\necho up > \"$MARK/up\"\nsleep 1000 & wait $!\n".into();
        let mut stop = t.scripts[0].clone();
        stop.name = "deregister".into();
        stop.run_on_stop = true;
        stop.script = "echo bye > \"$MARK/stop-hook\"".into();
        t.scripts.push(stop);
        let program = startup_program(&ws(serde_json::json!({})), &t);
        let mut child = run_program(&program, dir.path());
        assert!(
            wait_for(&dir.path().join("up")),
            "the blocking script started"
        );
        let started = std::time::Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the stop was prompt"
        );
        assert!(
            dir.path().join("stop-hook").exists(),
            "the runOnStop script ran"
        );
        assert!(
            dir.path().join("cleanup").exists(),
            "the script's own TERM trap ran"
        );
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
        assert_eq!(root_directory(&template(), "alice"), "/alice");
        assert_eq!(
            r.request.container_definitions[0].environment["BERTH_PARAM_ENABLE_VSCODE_WEB"],
            "false"
        );
    }
}
