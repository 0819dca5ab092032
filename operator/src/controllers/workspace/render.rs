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

/// The startup program: the template's scripts in order (those whose `when`
/// parameter is false are left out), long-running ones in the background,
/// then wait for SIGTERM so the container's stop timeout applies.
pub fn startup_program(ws: &WorkspaceSpec, template: &WorkspaceTemplateSpec) -> String {
    let mut out = String::from("set -u\nmkdir -p /tmp/berth-scripts\n");
    let params = effective_parameters(ws, template);
    for (i, s) in template.scripts.iter().enumerate() {
        if let Some(w) = &s.when {
            if params.get(w) != Some(&Value::Bool(true)) {
                continue;
            }
        }
        let file = format!("/tmp/berth-scripts/{i:02}-{}.sh", s.name);
        out.push_str(&format!(
            "cat > {file} <<'BERTH_SCRIPT_EOF'\n{}\nBERTH_SCRIPT_EOF\nchmod +x {file}\n",
            s.script.trim_end()
        ));
        let label = if s.display_name.is_empty() {
            &s.name
        } else {
            &s.display_name
        };
        out.push_str(&format!(
            "echo \"berth: running script {}\"\n",
            label.replace('"', "'")
        ));
        if s.blocks_login {
            out.push_str(&format!(
                "/bin/sh {file} || echo \"berth: script {} failed with $?\"\n",
                s.name
            ));
        } else {
            out.push_str(&format!("/bin/sh {file} &\n"));
        }
    }
    out.push_str("echo berth: startup scripts done\ntrap 'kill -TERM $(jobs -p) 2>/dev/null; exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n");
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
    api_url: &str,
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
    if !api_url.is_empty() {
        env.insert("BERTH_API_URL".into(), api_url.into());
    }
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
            "http://api",
        );
        let b = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            1,
            "fsap-1",
            "arn:secret:1",
            "http://api",
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
            "",
        );
        let cpu = task_definition(
            &ID,
            &ws(serde_json::json!({"resources": {"cpu": 1024, "memory": 2048}})),
            &template(),
            1,
            "fsap-1",
            "s",
            "",
        );
        let param = task_definition(
            &ID,
            &ws(serde_json::json!({"parameters": {"enable_vscode_web": true}})),
            &template(),
            1,
            "fsap-1",
            "s",
            "",
        );
        let version = task_definition(
            &ID,
            &ws(serde_json::json!({})),
            &template(),
            2,
            "fsap-1",
            "s",
            "",
        );
        for other in [&cpu, &param, &version] {
            assert_ne!(base.hash, other.hash);
        }
        assert_eq!((cpu.request.cpu, cpu.request.memory), (1024, 2048));
    }

    #[test]
    fn scripts_run_in_order_and_disabled_ones_are_left_out() {
        let off = startup_program(&ws(serde_json::json!({})), &template());
        assert!(!off.contains("serve-web"));
        let on = startup_program(
            &ws(serde_json::json!({"parameters": {"enable_vscode_web": true}})),
            &template(),
        );
        let persist = on.find("00-persist").unwrap();
        let web = on.find("01-vscode-web").unwrap();
        let git = on.find("02-git-config").unwrap();
        assert!(persist < web && web < git);
        assert!(
            on.contains("/bin/sh /tmp/berth-scripts/01-vscode-web.sh &"),
            "non-blocking scripts run in the background"
        );
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
            "",
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
