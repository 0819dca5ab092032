//! Every validation rule, as a user hits it: each test feeds YAML through
//! `parse_documents` and `decode` (or checks a workspace against a template
//! with `workspace_against_template`) and asserts the object reference, the
//! exact field path and a meaningful part of the message. No database.

use std::time::{Duration, Instant};

use berth::api::validate::{self, decode, workspace_against_template, Errors, FieldError};
use berth::api::yaml::{parse_documents, ParseError, MAX_DOCUMENTS};
use berth::api::{DynObject, Kind, WorkspaceSpec, WorkspaceTemplateSpec};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const TEMPLATE_HEAD: &str = "\
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: dev
spec:
  infrastructure:
    region: us-west-2
    cluster: berth
    subnets: [subnet-1]
    securityGroups: [sg-1]
    fileSystemId: fs-1
    executionRoleArn: arn:aws:iam::123456789012:role/exec
  container:
    image: ghcr.io/acme/dev:1
    homePath: /home/dev
";

const DEFAULT_RESOURCES: &str = "  resources:\n    default: {cpu: 1024, memory: 2048}\n";

/// A template named `dev`; `extra` is appended under `spec:` (two-space indent).
fn template(extra: &str) -> String {
    format!("{TEMPLATE_HEAD}{DEFAULT_RESOURCES}{extra}")
}

/// A template named `dev` whose `spec.resources` block is `resources`.
fn template_with_resources(resources: &str) -> String {
    format!("{TEMPLATE_HEAD}{resources}")
}

/// A workspace `name` owned by alice using template `dev`; `extra` is appended under `spec:`.
fn workspace_named(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\n\
         spec:\n  owner: alice\n  template:\n    name: dev\n{extra}"
    )
}

/// The workspace `alice`.
fn workspace(extra: &str) -> String {
    workspace_named("alice", extra)
}

/// A lifecycle policy `org`; `spec` is the body under `spec:`.
fn policy(spec: &str) -> String {
    format!("apiVersion: berth.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata:\n  name: org\nspec:\n{spec}")
}

/// Parses exactly one document.
fn one_doc(yaml: &str) -> Value {
    let mut docs = parse_documents(yaml).unwrap_or_else(|e| panic!("parse failed: {e}\n{yaml}"));
    assert_eq!(docs.len(), 1, "expected one document in\n{yaml}");
    docs.remove(0)
}

/// Parses and decodes one document that must be valid.
fn valid(yaml: &str) -> (Kind, DynObject) {
    match decode(&one_doc(yaml), None) {
        Ok(ok) => ok,
        Err(e) => panic!("expected a valid document, got:\n{e}\n---\n{yaml}"),
    }
}

/// Parses and decodes one document that must be invalid; returns its errors.
fn invalid(yaml: &str) -> Vec<FieldError> {
    match decode(&one_doc(yaml), None) {
        Ok(_) => panic!("expected the document to be rejected:\n{yaml}"),
        Err(e) => {
            assert!(!e.0.is_empty(), "Invalid must carry at least one error");
            e.0
        }
    }
}

fn show(errs: &[FieldError]) -> String {
    errs.iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that `errs` contains an error on `object` at exactly `field` whose
/// message contains every part of `message_parts`.
#[track_caller]
fn assert_has(errs: &[FieldError], object: &str, field: &str, message_parts: &[&str]) {
    let hit = errs.iter().any(|e| {
        e.object == object
            && e.field == field
            && message_parts.iter().all(|p| e.message.contains(p))
    });
    assert!(
        hit,
        "expected an error `{object}: {field}: …{}…`; got:\n{}",
        message_parts.join("…"),
        show(errs)
    );
}

/// Like [`assert_has`], and the error is the only one.
#[track_caller]
fn assert_only(errs: &[FieldError], object: &str, field: &str, message_parts: &[&str]) {
    assert_eq!(
        errs.len(),
        1,
        "expected exactly one error; got:\n{}",
        show(errs)
    );
    assert_has(errs, object, field, message_parts);
}

fn ws_spec(extra: &str) -> WorkspaceSpec {
    let (_, obj) = valid(&workspace(extra));
    serde_json::from_value(obj.spec).expect("a decoded workspace spec is typed")
}

fn tpl_spec(yaml: &str) -> WorkspaceTemplateSpec {
    let (kind, obj) = valid(yaml);
    assert_eq!(kind, Kind::WorkspaceTemplate);
    serde_json::from_value(obj.spec).expect("a decoded template spec is typed")
}

/// Checks workspace `alice` (spec `extra`) against `template`, optionally with its previous spec.
fn against(
    extra: &str,
    template: &WorkspaceTemplateSpec,
    previous: Option<&WorkspaceSpec>,
) -> Vec<FieldError> {
    let ws = ws_spec(extra);
    let mut errs = Errors::new("workspaces/alice", None);
    workspace_against_template(&mut errs, &ws, template, previous);
    errs.list
}

// The Fargate table, written out independently of the implementation.
fn fargate_memory(cpu: u32) -> Vec<u32> {
    let r = |lo: u32, hi: u32, step: u32| (lo..=hi).step_by(step as usize).collect::<Vec<_>>();
    match cpu {
        256 => vec![512, 1024, 2048],
        512 => r(1024, 4096, 1024),
        1024 => r(2048, 8192, 1024),
        2048 => r(4096, 16384, 1024),
        4096 => r(8192, 30720, 1024),
        8192 => r(16384, 61440, 4096),
        16384 => r(32768, 122880, 8192),
        _ => vec![],
    }
}

const CPUS: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn resources(cpu: u32, memory: u32) -> String {
    format!("  resources:\n    cpu: {cpu}\n    memory: {memory}\n")
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

#[test]
fn lower_case_names_with_digits_and_inner_dashes_are_accepted() {
    for name in ["alice", "a", "dev-2", "0day", "a-b-c-1", &"a".repeat(63)] {
        let (kind, obj) = valid(&workspace_named(name, ""));
        assert_eq!(kind, Kind::Workspace);
        assert_eq!(obj.metadata.name, name);
        assert_eq!(obj.reference(), format!("workspaces/{name}"));
    }
}

#[test]
fn an_upper_case_name_is_rejected_at_metadata_name() {
    let errs = invalid(&workspace_named("Alice", ""));
    assert_only(
        &errs,
        "workspaces/Alice",
        "metadata.name",
        &["\"Alice\"", "RFC 1123"],
    );
}

#[test]
fn an_underscore_in_a_name_is_rejected() {
    let errs = invalid(&workspace_named("alice_dev", ""));
    assert_only(
        &errs,
        "workspaces/alice_dev",
        "metadata.name",
        &["\"alice_dev\"", "lower-case letters, digits and '-'"],
    );
}

#[test]
fn a_name_of_64_characters_is_rejected_while_63_is_accepted() {
    let long = "a".repeat(64);
    let errs = invalid(&workspace_named(&long, ""));
    assert_only(
        &errs,
        &format!("workspaces/{long}"),
        "metadata.name",
        &["at most 63 characters", "got 64"],
    );
    valid(&workspace_named(&"a".repeat(63), ""));
}

#[test]
fn a_name_starting_or_ending_with_a_dash_is_rejected() {
    for name in ["-alice", "alice-", "-"] {
        let errs = invalid(&workspace_named(&format!("\"{name}\""), ""));
        assert_only(
            &errs,
            &format!("workspaces/{name}"),
            "metadata.name",
            &["starting and ending with a letter or digit"],
        );
    }
}

#[test]
fn names_with_dots_spaces_or_non_ascii_letters_are_rejected() {
    for name in ["alice.dev", "\"alice dev\"", "alicé"] {
        let errs = invalid(&workspace_named(name, ""));
        assert_eq!(errs.len(), 1, "{name}: {}", show(&errs));
        assert_eq!(errs[0].field, "metadata.name", "{name}");
        assert!(
            errs[0].message.contains("RFC 1123"),
            "{name}: {}",
            errs[0].message
        );
    }
}

#[test]
fn an_empty_name_is_rejected_and_a_missing_name_is_reported_against_the_document() {
    let errs = invalid(&workspace_named("\"\"", ""));
    assert_only(&errs, "document", "metadata.name", &["must not be empty"]);

    let doc = "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  namespace: default\n\
               spec:\n  template:\n    name: dev\n";
    let errs = invalid(doc);
    assert_only(&errs, "document", "metadata", &["missing field `name`"]);
}

#[test]
fn the_namespace_follows_the_same_rules_as_names() {
    for (ns, part) in [
        ("Team", "RFC 1123"),
        ("team_a", "RFC 1123"),
        ("-team", "RFC 1123"),
        ("team-", "RFC 1123"),
        (&*"n".repeat(64), "at most 63 characters"),
        ("\"\"", "must not be empty"),
    ] {
        let doc = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\n  namespace: {ns}\n\
             spec:\n  template:\n    name: dev\n"
        );
        let errs = invalid(&doc);
        assert_only(&errs, "workspaces/alice", "metadata.namespace", &[part]);
    }
    let (_, obj) = valid(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\n  namespace: team-a\n\
         spec:\n  template:\n    name: dev\n",
    );
    assert_eq!(obj.metadata.namespace, "team-a");
}

#[test]
fn template_and_policy_names_are_checked_too() {
    let errs = invalid(&template("").replace("name: dev", "name: Dev_Env"));
    assert_only(
        &errs,
        "workspacetemplates/Dev_Env",
        "metadata.name",
        &["RFC 1123"],
    );
    let errs =
        invalid(&policy("  requireActiveVersion: true\n").replace("name: org", "name: org."));
    assert_only(
        &errs,
        "lifecyclepolicies/org.",
        "metadata.name",
        &["RFC 1123"],
    );
}

#[test]
fn the_owner_and_the_template_reference_are_dns_labels() {
    let doc = "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\n\
               spec:\n  owner: Alice\n  template:\n    name: my_template\n";
    let errs = invalid(doc);
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.owner",
        &["\"Alice\"", "RFC 1123"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.template.name",
        &["\"my_template\"", "RFC 1123"],
    );
}

#[test]
fn a_template_version_pin_must_be_at_least_one() {
    let doc = workspace("").replace("    name: dev\n", "    name: dev\n    version: 0\n");
    let errs = invalid(&doc);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.template.version",
        &["versions start at 1"],
    );
    let doc = workspace("").replace("    name: dev\n", "    name: dev\n    version: 3\n");
    valid(&doc);
}

#[test]
fn dns_label_reports_each_problem() {
    assert!(validate::dns_label("alice-2").is_ok());
    assert!(validate::dns_label(&"x".repeat(63)).is_ok());
    assert_eq!(validate::dns_label("").unwrap_err(), "must not be empty");
    assert!(validate::dns_label(&"x".repeat(64))
        .unwrap_err()
        .contains("at most 63"));
    for bad in ["A", "a_b", "-a", "a-", "a.b", "a b", "ä"] {
        let e = validate::dns_label(bad).unwrap_err();
        assert!(e.contains("RFC 1123"), "{bad}: {e}");
        assert!(
            e.contains(&format!("{bad:?}")),
            "{bad}: the message quotes the name: {e}"
        );
    }
}

// ---------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_top_level_field_is_rejected_with_its_name() {
    let errs = invalid(&format!("{}specs:\n  running: true\n", workspace("")));
    assert_only(
        &errs,
        "workspaces/alice",
        "specs",
        &["unknown field `specs`"],
    );
}

#[test]
fn an_unknown_metadata_field_is_rejected_at_its_path() {
    let doc = workspace("").replace("  name: alice\n", "  name: alice\n  lables:\n    team: a\n");
    let errs = invalid(&doc);
    assert_only(
        &errs,
        "workspaces/alice",
        "metadata.lables",
        &["unknown field `lables`", "labels"],
    );
}

#[test]
fn an_unknown_spec_field_is_rejected_at_its_path() {
    let errs = invalid(&workspace("  runing: false\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.runing",
        &["unknown field `runing`", "running"],
    );
}

#[test]
fn an_unknown_nested_field_is_rejected_at_its_full_path() {
    let errs = invalid(&workspace(
        "  schedule:\n    autostart:\n      cron: \"0 8 * * 1-5\"\n      timezon: Europe/Berlin\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.timezon",
        &["unknown field `timezon`", "timezone"],
    );

    let errs = invalid(&workspace("  schedule:\n    autostop:\n      after: 2h\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostop.after",
        &["unknown field `after`"],
    );

    let errs = invalid(&workspace(
        "  resources:\n    cpu: 1024\n    memory: 2048\n    gpu: 1\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.gpu",
        &["unknown field `gpu`"],
    );

    let errs =
        invalid(&workspace("").replace("    name: dev\n", "    name: dev\n    revision: 2\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.template.revision",
        &["unknown field `revision`"],
    );
}

#[test]
fn unknown_fields_inside_template_lists_are_reported_with_the_index() {
    let errs = invalid(&template(
        "  parameters:\n  - name: a\n    type: string\n  - name: b\n    type: number\n    validaton:\n      min: 1\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[1].validaton",
        &["unknown field `validaton`"],
    );

    let errs = invalid(&template(
        "  scripts:\n  - name: a\n    script: echo hi\n    if: x\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[0].if",
        &["unknown field `if`"],
    );

    let errs = invalid(&template("").replace(
        "    image: ghcr.io/acme/dev:1\n",
        "    image: x\n    ports: [22]\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.container.ports",
        &["unknown field `ports`"],
    );

    let errs = invalid(&template("").replace(
        "    cluster: berth\n",
        "    cluster: berth\n    vpc: vpc-1\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.vpc",
        &["unknown field `vpc`"],
    );
}

#[test]
fn unknown_policy_fields_are_rejected_at_their_path() {
    let errs = invalid(&policy("  autostop:\n    maxIdle: 2h\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostop.maxIdle",
        &["unknown field `maxIdle`"],
    );
    let errs = invalid(&policy("  autostart:\n    weekdays: [Mon]\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.weekdays",
        &["unknown field `weekdays`"],
    );
    let errs = invalid(&policy("  requireLatest: true\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.requireLatest",
        &["unknown field `requireLatest`"],
    );
}

// ---------------------------------------------------------------------------
// Wrong types
// ---------------------------------------------------------------------------

#[test]
fn a_string_where_a_number_belongs_is_a_type_error_at_its_path() {
    let errs = invalid(&workspace(
        "  resources:\n    cpu: lots\n    memory: 2048\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.cpu",
        &["invalid type", "\"lots\""],
    );
}

#[test]
fn a_negative_cpu_is_a_type_error() {
    let errs = invalid(&workspace("  resources:\n    cpu: -1\n    memory: 2048\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.cpu",
        &["invalid value", "-1", "u32"],
    );
}

#[test]
fn wrong_types_are_reported_at_every_level() {
    let errs = invalid(&workspace("  template: dev\n").replace("  template:\n    name: dev\n", ""));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.template",
        &["invalid type", "\"dev\""],
    );

    let errs =
        invalid(&workspace("").replace("    name: dev\n", "    name: dev\n    version: latest\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.template.version",
        &["invalid type", "\"latest\""],
    );

    let errs = invalid(&workspace(
        "  schedule:\n    autostop:\n      afterInactivity: [2h]\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostop.afterInactivity",
        &["invalid type"],
    );

    let errs =
        invalid(&workspace("").replace("  name: alice\n", "  name: alice\n  labels: [a, b]\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "metadata.labels",
        &["invalid type"],
    );

    let errs = invalid(&workspace("  deletionPolicy: Destroy\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.deletionPolicy",
        &["unknown variant `Destroy`", "Retain", "Delete"],
    );

    let errs = invalid(&template("  parameters:\n    name: a\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters",
        &["invalid type"],
    );

    let errs = invalid(&template("").replace("subnets: [subnet-1]", "subnets: subnet-1"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.subnets",
        &["invalid type"],
    );

    let errs = invalid(&policy("  autostart:\n    days: Mon\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days",
        &["invalid type"],
    );
}

#[test]
fn a_missing_required_field_is_reported_at_its_parent() {
    let doc = "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\nspec:\n  owner: alice\n";
    let errs = invalid(doc);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec",
        &["missing field `template`"],
    );

    let errs = invalid(&template("").replace("    image: ghcr.io/acme/dev:1\n", ""));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.container",
        &["missing field `image`"],
    );
}

/// One apply shows every problem of a document, not the first serde meets:
/// fixing one field and applying again must not reveal the next.
#[test]
fn every_problem_of_a_document_is_reported_at_once() {
    let doc = "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\n  colour: red\n\
               spec:\n  template:\n    name: dev\n    version: latest\n  deletionPolicy: Destroy\n\
               \x20 schedule:\n    autostart:\n      cron: \"0 8 * *\"\n      timezone: Mars/Olympus\n";
    let errs = invalid(doc);
    assert_has(
        &errs,
        "workspaces/alice",
        "metadata.colour",
        &["unknown field"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.template.version",
        &["invalid type", "\"latest\""],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.deletionPolicy",
        &["unknown variant `Destroy`"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.cron",
        &[],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.timezone",
        &["Mars/Olympus"],
    );
    // The values decoding stood in for are not the user's: no error about them.
    assert_eq!(errs.len(), 5, "expected five errors; got:\n{}", show(&errs));

    let errs = invalid(
        &template_with_resources("  resources:\n    default: {cpu: 1024}\n")
            .replace("subnets: [subnet-1]", "subnets: subnet-1"),
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.default",
        &["missing field `memory`"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.subnets",
        &["invalid type"],
    );
    assert_eq!(errs.len(), 2, "expected two errors; got:\n{}", show(&errs));
}

#[test]
fn a_spec_or_metadata_that_is_missing_is_required() {
    let errs =
        invalid("apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: alice\n");
    assert_only(&errs, "workspaces/alice", "spec", &["required"]);

    let errs = invalid(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nspec:\n  template:\n    name: dev\n",
    );
    assert_only(&errs, "document", "metadata", &["required"]);
}

#[test]
fn a_document_that_is_not_a_mapping_is_rejected() {
    for doc in ["- a\n- b\n", "just text\n", "42\n"] {
        let docs = parse_documents(doc).unwrap();
        for (i, d) in docs.iter().enumerate() {
            let e = decode(d, Some(i)).unwrap_err();
            assert_eq!(e.0.len(), 1, "{doc}");
            assert_eq!(e.0[0].object, format!("document {}", i + 1));
            assert_eq!(e.0[0].field, "");
            assert!(
                e.0[0].message.contains("must be a mapping"),
                "{}",
                e.0[0].message
            );
        }
    }
}

// ---------------------------------------------------------------------------
// apiVersion and kind
// ---------------------------------------------------------------------------

#[test]
fn a_missing_api_version_is_required() {
    let errs = invalid(&workspace("").replace("apiVersion: berth.dev/v1alpha1\n", ""));
    assert_only(
        &errs,
        "workspaces/alice",
        "apiVersion",
        &["required", "berth.dev/v1alpha1"],
    );
}

#[test]
fn a_wrong_api_version_is_rejected_naming_the_supported_one() {
    for v in ["v1", "berth.dev/v1", "berth.dev/v1beta1", "apps/v1alpha1"] {
        let errs = invalid(&workspace("").replace("berth.dev/v1alpha1", v));
        assert_only(
            &errs,
            "workspaces/alice",
            "apiVersion",
            &[&format!("{v:?} is not supported"), "use berth.dev/v1alpha1"],
        );
    }
}

#[test]
fn a_missing_kind_is_required_and_the_error_names_the_document() {
    let docs = parse_documents(&format!(
        "{}---\n{}",
        template(""),
        workspace("").replace("kind: Workspace\n", "")
    ))
    .unwrap();
    let e = decode(&docs[1], Some(1)).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].object, "document 2", "{e}");
    assert_eq!(e.0[0].field, "kind");
    assert!(e.0[0].message.contains("required"), "{e}");
    assert!(
        e.0[0]
            .message
            .contains("LifecyclePolicy, WorkspaceTemplate, Workspace"),
        "{e}"
    );
}

#[test]
fn a_wrong_kind_is_rejected_listing_the_berth_kinds() {
    for k in ["Deployment", "workspace", "Workspaces", "Template"] {
        let errs = invalid(&workspace("").replace("kind: Workspace", &format!("kind: {k}")));
        assert_only(
            &errs,
            &format!("{k}/alice"),
            "kind",
            &[
                &format!("{k:?} is not a Berth kind"),
                "LifecyclePolicy, WorkspaceTemplate, Workspace",
            ],
        );
    }
}

#[test]
fn a_wrong_api_version_and_a_wrong_kind_are_both_reported() {
    let errs = invalid(
        &workspace("")
            .replace("berth.dev/v1alpha1", "v1")
            .replace("kind: Workspace", "kind: Pod"),
    );
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(&errs, "Pod/alice", "apiVersion", &["not supported"]);
    assert_has(&errs, "Pod/alice", "kind", &["not a Berth kind"]);
}

// ---------------------------------------------------------------------------
// Fargate CPU and memory
// ---------------------------------------------------------------------------

#[test]
fn every_valid_fargate_size_is_accepted() {
    for cpu in CPUS {
        for memory in fargate_memory(cpu) {
            let (_, obj) = valid(&workspace(&resources(cpu, memory)));
            assert_eq!(obj.spec["resources"], json!({"cpu": cpu, "memory": memory}));
        }
    }
}

#[test]
fn every_memory_value_outside_the_table_is_rejected_listing_the_valid_ones() {
    // Sweep every multiple of 512 MiB up to 128 GiB (and a few odd values) for every CPU.
    let mut probes: Vec<u32> = (0..=131_072).step_by(512).collect();
    probes.extend([1, 1000, 2047, 2049, 30_721, 61_439, 122_881, 123_904]);
    for cpu in CPUS {
        let table = fargate_memory(cpu);
        let listing = join(&table);
        for &memory in &probes {
            let doc = workspace(&resources(cpu, memory));
            let result = decode(&one_doc(&doc), None);
            if table.contains(&memory) {
                assert!(
                    result.is_ok(),
                    "cpu {cpu} memory {memory} must be valid: {:?}",
                    result.err()
                );
            } else {
                let errs = result
                    .expect_err(&format!("cpu {cpu} memory {memory} must be rejected"))
                    .0;
                assert_only(
                    &errs,
                    "workspaces/alice",
                    "spec.resources.memory",
                    &[
                        &format!("{memory} MiB is not valid with cpu {cpu}"),
                        &format!("valid memory values for cpu {cpu}: {listing}"),
                    ],
                );
            }
        }
    }
}

#[test]
fn the_boundaries_of_each_cpu_are_exact() {
    // (cpu, lowest, highest, step): the values just outside must fail, the ends must pass.
    for (cpu, lo, hi, step) in [
        (512, 1024, 4096, 1024),
        (1024, 2048, 8192, 1024),
        (2048, 4096, 16384, 1024),
        (4096, 8192, 30720, 1024),
        (8192, 16384, 61440, 4096),
        (16384, 32768, 122880, 8192),
    ] {
        valid(&workspace(&resources(cpu, lo)));
        valid(&workspace(&resources(cpu, hi)));
        valid(&workspace(&resources(cpu, lo + step)));
        for bad in [lo - step, hi + step, lo + step / 2, hi - 1] {
            let errs = invalid(&workspace(&resources(cpu, bad)));
            assert_only(
                &errs,
                "workspaces/alice",
                "spec.resources.memory",
                &[&format!("{bad} MiB is not valid with cpu {cpu}")],
            );
        }
    }
    for ok in [512, 1024, 2048] {
        valid(&workspace(&resources(256, ok)));
    }
    for bad in [256, 768, 1536, 3072, 4096] {
        let errs = invalid(&workspace(&resources(256, bad)));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.resources.memory",
            &["valid memory values for cpu 256: 512, 1024, 2048"],
        );
    }
}

#[test]
fn the_memory_error_lists_exactly_the_values_for_that_cpu() {
    let errs = invalid(&workspace(&resources(512, 512)));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.memory",
        &["valid memory values for cpu 512: 1024, 2048, 3072, 4096"],
    );
    let m = &errs[0].message;
    assert!(m.ends_with("1024, 2048, 3072, 4096"), "{m}");

    let errs = invalid(&workspace(&resources(8192, 8192)));
    let listing =
        "16384, 20480, 24576, 28672, 32768, 36864, 40960, 45056, 49152, 53248, 57344, 61440";
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.memory",
        &[listing],
    );
    assert!(errs[0].message.ends_with(listing), "{}", errs[0].message);
}

#[test]
fn an_invalid_cpu_is_rejected_listing_the_valid_cpus() {
    for cpu in [0, 128, 300, 1000, 3072, 32768] {
        let errs = invalid(&workspace(&resources(cpu, 2048)));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.resources.cpu",
            &[
                &format!("{cpu} is not a Fargate CPU value"),
                "valid values: 256, 512, 1024, 2048, 4096, 8192, 16384",
            ],
        );
    }
}

#[test]
fn the_template_default_size_is_a_fargate_size_too() {
    let errs = invalid(&template_with_resources(
        "  resources:\n    default: {cpu: 256, memory: 4096}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.default.memory",
        &["valid memory values for cpu 256: 512, 1024, 2048"],
    );
    let errs = invalid(&template_with_resources(
        "  resources:\n    default: {cpu: 384, memory: 1024}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.default.cpu",
        &["384 is not a Fargate CPU value", "valid values: 256"],
    );
}

#[test]
fn template_cpu_options_must_be_fargate_cpus_and_include_the_default() {
    let errs = invalid(&template_with_resources(
        "  resources:\n    default: {cpu: 1024, memory: 2048}\n    cpuOptions: [512, 1000, 2048]\n",
    ));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.cpuOptions[1]",
        &["1000 is not a Fargate CPU value"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.default.cpu",
        &["1024 is not one of cpuOptions"],
    );

    let errs = invalid(&template_with_resources(
        "  resources:\n    default: {cpu: 1024, memory: 2048}\n    memoryOptions: [4096, 8192]\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.resources.default.memory",
        &["2048 is not one of memoryOptions"],
    );
}

#[test]
fn fargate_size_reports_under_the_given_path() {
    let mut errs = Errors::new("workspaces/x", Some(4));
    validate::fargate_size(&mut errs, "spec.resources", 2048, 2048);
    validate::fargate_size(&mut errs, "spec.resources", 2048, 4096);
    assert_eq!(errs.list.len(), 1);
    assert_eq!(errs.list[0].document, Some(4));
    assert_has(
        &errs.list,
        "workspaces/x",
        "spec.resources.memory",
        &["2048 MiB is not valid with cpu 2048"],
    );
}

// ---------------------------------------------------------------------------
// Template parameters
// ---------------------------------------------------------------------------

#[test]
fn parameters_of_each_type_with_matching_defaults_and_options_are_accepted() {
    let spec = tpl_spec(&template(
        "  parameters:\n\
         \x20 - name: enable_vscode_web\n    type: bool\n    default: true\n    mutable: true\n\
         \x20 - name: region\n    type: string\n    default: eu\n    options: [eu, us]\n\
         \x20 - name: disk\n    type: number\n    default: 20\n    validation: {min: 10, max: 100}\n\
         \x20 - name: repo\n    type: string\n    validation: {regex: \"[a-z]+/[a-z]+\"}\n\
         \x20 - name: ratio\n    type: number\n    default: 0.5\n    options: [0.25, 0.5]\n\
         \x20 scripts:\n\
         \x20 - name: code-server\n    script: code-server &\n    when: enable_vscode_web\n    blocksLogin: false\n",
    ));
    assert_eq!(spec.parameters.len(), 5);
    assert_eq!(spec.scripts[0].when.as_deref(), Some("enable_vscode_web"));
}

#[test]
fn an_unknown_parameter_type_is_rejected_listing_the_types() {
    let errs = invalid(&template("  parameters:\n  - name: a\n    type: int\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].type",
        &["unknown variant `int`", "bool", "string", "number"],
    );
}

#[test]
fn a_default_of_the_wrong_type_is_rejected() {
    for (ty, default, shown) in [
        ("bool", "\"true\"", "\"true\" is not a bool"),
        ("bool", "1", "1 is not a bool"),
        ("number", "\"3\"", "\"3\" is not a number"),
        ("string", "3", "3 is not a string"),
        ("string", "false", "false is not a string"),
    ] {
        let errs = invalid(&template(&format!(
            "  parameters:\n  - name: p\n    type: {ty}\n    default: {default}\n"
        )));
        assert_only(
            &errs,
            "workspacetemplates/dev",
            "spec.parameters[0].default",
            &[shown],
        );
    }
}

#[test]
fn options_of_the_wrong_type_are_rejected_at_their_index() {
    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: string\n    options: [a, 1, b, true]\n",
    ));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].options[1]",
        &["1 is not a string"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].options[3]",
        &["true is not a string"],
    );

    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: number\n    options: [1, two]\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].options[1]",
        &["\"two\" is not a number"],
    );
}

#[test]
fn a_default_that_is_not_one_of_the_options_is_rejected() {
    let errs = invalid(&template("  parameters:\n  - name: size\n    type: string\n    default: xl\n    options: [s, m, l]\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["\"xl\" is not one of the options", "\"s\", \"m\", \"l\""],
    );
}

#[test]
fn an_invalid_regex_is_rejected() {
    let errs = invalid(&template(
        "  parameters:\n  - name: repo\n    type: string\n    validation: {regex: \"([a-z\"}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].validation.regex",
        &["invalid regular expression"],
    );
}

#[test]
fn a_regex_on_a_non_string_parameter_is_rejected() {
    for ty in ["number", "bool"] {
        let errs = invalid(&template(&format!(
            "  parameters:\n  - name: p\n    type: {ty}\n    validation: {{regex: \"[0-9]+\"}}\n"
        )));
        assert_only(
            &errs,
            "workspacetemplates/dev",
            "spec.parameters[0].validation.regex",
            &["only string parameters take a regex"],
        );
    }
}

#[test]
fn min_or_max_on_a_non_number_parameter_is_rejected() {
    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: string\n    validation: {min: 1}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].validation",
        &["only number parameters take min/max"],
    );
    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: bool\n    validation: {max: 1}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].validation",
        &["only number parameters take min/max"],
    );
}

#[test]
fn a_min_greater_than_max_is_rejected() {
    let errs = invalid(&template(
        "  parameters:\n  - name: disk\n    type: number\n    validation: {min: 100, max: 10}\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].validation.min",
        &["min 100 is greater than max 10"],
    );
    // min == max is a legitimate fixed value
    valid(&template("  parameters:\n  - name: disk\n    type: number\n    default: 10\n    validation: {min: 10, max: 10}\n"));
}

#[test]
fn a_default_outside_min_and_max_is_rejected() {
    let errs = invalid(&template("  parameters:\n  - name: disk\n    type: number\n    default: 5\n    validation: {min: 10, max: 100}\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["5 is less than the minimum 10"],
    );
    let errs = invalid(&template("  parameters:\n  - name: disk\n    type: number\n    default: 101\n    validation: {min: 10, max: 100}\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["101 is greater than the maximum 100"],
    );
    for edge in [10, 100] {
        valid(&template(&format!("  parameters:\n  - name: disk\n    type: number\n    default: {edge}\n    validation: {{min: 10, max: 100}}\n")));
    }
}

#[test]
fn a_default_that_does_not_match_the_regex_is_rejected() {
    let errs = invalid(&template("  parameters:\n  - name: repo\n    type: string\n    default: \"acme/web!\"\n    validation: {regex: \"[a-z]+/[a-z]+\"}\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["\"acme/web!\" does not match /[a-z]+/[a-z]+/"],
    );
}

#[test]
fn duplicate_parameter_names_are_rejected_at_the_second() {
    let errs = invalid(&template("  parameters:\n  - name: a\n    type: bool\n  - name: b\n    type: bool\n  - name: a\n    type: string\n"));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[2].name",
        &["duplicate parameter \"a\""],
    );
}

#[test]
fn a_parameter_name_must_be_an_identifier() {
    for name in ["1st", "\"\"", "\"has space\"", "dollar$"] {
        let errs = invalid(&template(&format!(
            "  parameters:\n  - name: {name}\n    type: bool\n"
        )));
        assert_only(
            &errs,
            "workspacetemplates/dev",
            "spec.parameters[0].name",
            &["is not a valid parameter name"],
        );
    }
}

#[test]
fn a_script_when_naming_a_missing_parameter_is_rejected() {
    let errs = invalid(&template(
        "  scripts:\n  - name: s\n    script: echo hi\n    when: enable_jupyter\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[0].when",
        &["names no parameter \"enable_jupyter\""],
    );
}

#[test]
fn a_script_when_naming_a_non_bool_parameter_is_rejected() {
    let errs = invalid(&template(
        "  parameters:\n  - name: editor\n    type: string\n    default: vim\n\
         \x20 scripts:\n  - name: s\n    script: echo hi\n    when: editor\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[0].when",
        &["parameter \"editor\" is string", "needs a bool parameter"],
    );
}

#[test]
fn scripts_need_a_body_and_unique_names() {
    let errs = invalid(&template(
        "  scripts:\n  - name: s\n    script: \"  \"\n  - name: s\n    script: echo\n",
    ));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[0].script",
        &["must not be empty"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[1].name",
        &["duplicate script \"s\""],
    );
}

#[test]
fn every_problem_of_a_template_is_reported_at_once() {
    let errs = invalid(&template(
        "  parameters:\n\
         \x20 - name: a\n    type: bool\n    default: maybe\n\
         \x20 - name: b\n    type: number\n    validation: {min: 3, max: 1}\n\
         \x20 - name: a\n    type: string\n\
         \x20 scripts:\n  - name: s\n    script: x\n    when: b\n",
    ));
    assert_eq!(errs.len(), 4, "{}", show(&errs));
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["\"maybe\" is not a bool"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[1].validation.min",
        &["greater than max"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[2].name",
        &["duplicate"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.scripts[0].when",
        &["needs a bool parameter"],
    );
}

#[test]
fn template_infrastructure_and_container_rules_are_checked() {
    let doc = template("")
        .replace("region: us-west-2", "region: \"\"")
        .replace("subnets: [subnet-1]", "subnets: []")
        .replace(
            "homePath: /home/dev",
            "homePath: home/dev\n    stopTimeout: 300\n    env:\n      1BAD: x",
        );
    let errs = invalid(&doc);
    assert_eq!(errs.len(), 5, "{}", show(&errs));
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.region",
        &["required"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.subnets",
        &["at least one subnet"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.container.homePath",
        &["must be an absolute path"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.container.stopTimeout",
        &["2 to 120 seconds"],
    );
    assert_has(
        &errs,
        "workspacetemplates/dev",
        "spec.container.env.1BAD",
        &["not a valid environment variable name"],
    );
}

// ---------------------------------------------------------------------------
// Workspace parameters against the template
// ---------------------------------------------------------------------------

fn params_template() -> WorkspaceTemplateSpec {
    tpl_spec(&template(
        "  parameters:\n\
         \x20 - name: dotfiles\n    type: string\n    default: \"\"\n\
         \x20 - name: region\n    type: string\n    default: eu\n    options: [eu, us]\n\
         \x20 - name: disk\n    type: number\n    default: 20\n    mutable: true\n    validation: {min: 10, max: 100}\n\
         \x20 - name: repo\n    type: string\n    default: acme/web\n    validation: {regex: \"[a-z]+/[a-z]+\"}\n\
         \x20 - name: gpu\n    type: bool\n    default: false\n\
         \x20 - name: editor\n    type: string\n    mutable: true\n    default: vim\n",
    ))
}

#[test]
fn workspace_values_matching_the_template_are_accepted() {
    let t = params_template();
    let errs = against(
        "  parameters:\n    region: us\n    disk: 100\n    repo: acme/api\n    gpu: true\n    dotfiles: https://x\n",
        &t,
        None,
    );
    assert!(errs.is_empty(), "{}", show(&errs));
    assert!(against("", &t, None).is_empty());
}

#[test]
fn an_unknown_workspace_parameter_is_rejected_listing_the_known_ones() {
    let errs = against(
        "  parameters:\n    jupyter: true\n",
        &params_template(),
        None,
    );
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.jupyter",
        &[
            "template \"dev\" has no parameter \"jupyter\"",
            "disk, dotfiles, editor, gpu, region, repo",
        ],
    );
    let bare = tpl_spec(&template(""));
    let errs = against("  parameters:\n    x: 1\n", &bare, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.x",
        &["its parameters: none"],
    );
}

#[test]
fn a_workspace_value_of_the_wrong_type_is_rejected() {
    let t = params_template();
    for (extra, field, msg) in [
        (
            "    disk: \"50\"\n",
            "spec.parameters.disk",
            "\"50\" is not a number",
        ),
        (
            "    gpu: \"true\"\n",
            "spec.parameters.gpu",
            "\"true\" is not a bool",
        ),
        (
            "    gpu: yes\n",
            "spec.parameters.gpu",
            "\"yes\" is not a bool",
        ),
        (
            "    region: 1\n",
            "spec.parameters.region",
            "1 is not a string",
        ),
        (
            "    dotfiles: [a]\n",
            "spec.parameters.dotfiles",
            "[\"a\"] is not a string",
        ),
    ] {
        let errs = against(&format!("  parameters:\n{extra}"), &t, None);
        assert_only(&errs, "workspaces/alice", field, &[msg]);
    }
}

#[test]
fn a_workspace_value_outside_the_options_is_rejected_listing_them() {
    let errs = against("  parameters:\n    region: ap\n", &params_template(), None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.region",
        &["\"ap\" is not one of the options: \"eu\", \"us\""],
    );
}

#[test]
fn a_workspace_value_not_matching_the_regex_is_rejected() {
    let t = params_template();
    let errs = against("  parameters:\n    repo: acme\n", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.repo",
        &["\"acme\" does not match /[a-z]+/[a-z]+/"],
    );
    // the regex must match the whole value, not a part of it
    let errs = against("  parameters:\n    repo: \"x acme/web y\"\n", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.repo",
        &["does not match"],
    );
}

#[test]
fn a_workspace_value_below_min_or_above_max_is_rejected() {
    let t = params_template();
    let errs = against("  parameters:\n    disk: 9\n", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.disk",
        &["9 is less than the minimum 10"],
    );
    let errs = against("  parameters:\n    disk: 100.5\n", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.disk",
        &["100.5 is greater than the maximum 100"],
    );
    for ok in ["10", "100", "55.5"] {
        assert!(
            against(&format!("  parameters:\n    disk: {ok}\n"), &t, None).is_empty(),
            "{ok}"
        );
    }
}

#[test]
fn a_required_parameter_missing_from_the_workspace_is_rejected() {
    let t = tpl_spec(&template("  parameters:\n  - name: team\n    type: string\n  - name: gpu\n    type: bool\n    default: false\n"));
    let errs = against("", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.team",
        &["required", "no default"],
    );
    assert!(against("  parameters:\n    team: web\n", &t, None).is_empty());
}

#[test]
fn every_parameter_problem_of_a_workspace_is_reported_at_once() {
    let t = params_template();
    let errs = against(
        "  parameters:\n    region: ap\n    disk: 1\n    nope: 1\n",
        &t,
        None,
    );
    assert_eq!(errs.len(), 3, "{}", show(&errs));
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.parameters.region",
        &["not one of the options"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.parameters.disk",
        &["less than the minimum"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.parameters.nope",
        &["has no parameter"],
    );
}

// ---------------------------------------------------------------------------
// Immutable parameters
// ---------------------------------------------------------------------------

#[test]
fn an_immutable_parameter_cannot_change_after_creation() {
    let t = params_template();
    let before = ws_spec("  parameters:\n    region: eu\n");
    let errs = against("  parameters:\n    region: us\n", &t, Some(&before));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.region",
        &["is immutable", "it was \"eu\" at creation", "got \"us\""],
    );
}

#[test]
fn an_immutable_parameter_can_be_anything_valid_at_creation() {
    let t = params_template();
    assert!(against("  parameters:\n    region: us\n    gpu: true\n", &t, None).is_empty());
}

#[test]
fn a_mutable_parameter_can_change_after_creation() {
    let t = params_template();
    let before = ws_spec("  parameters:\n    disk: 20\n    editor: vim\n");
    let errs = against(
        "  parameters:\n    disk: 80\n    editor: emacs\n",
        &t,
        Some(&before),
    );
    assert!(errs.is_empty(), "{}", show(&errs));
    // and can be removed (falling back to the default)
    assert!(against("", &t, Some(&before)).is_empty());
}

#[test]
fn an_immutable_parameter_left_at_its_default_stays_valid() {
    let t = params_template();
    let before = ws_spec("");
    assert!(against("", &t, Some(&before)).is_empty());
    // writing the default out explicitly is no change
    let errs = against(
        "  parameters:\n    region: eu\n    gpu: false\n",
        &t,
        Some(&before),
    );
    assert!(errs.is_empty(), "{}", show(&errs));
    // ... and a mutable change next to it is fine
    assert!(against("  parameters:\n    disk: 30\n", &t, Some(&before)).is_empty());
}

#[test]
fn an_immutable_parameter_left_at_its_default_cannot_be_set_to_another_value_later() {
    let t = params_template();
    let before = ws_spec("");
    let errs = against("  parameters:\n    gpu: true\n", &t, Some(&before));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.gpu",
        &["is immutable", "it was false", "got true"],
    );
}

#[test]
fn removing_an_immutable_value_that_differs_from_the_default_is_a_change() {
    let t = params_template();
    let before = ws_spec("  parameters:\n    region: us\n");
    let errs = against("", &t, Some(&before));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.region",
        &["is immutable", "it was \"us\"", "got \"eu\""],
    );
}

// ---------------------------------------------------------------------------
// Template resource options restrict the workspace
// ---------------------------------------------------------------------------

fn sized_template() -> WorkspaceTemplateSpec {
    tpl_spec(&template_with_resources(
        "  resources:\n    default: {cpu: 1024, memory: 2048}\n    cpuOptions: [512, 1024, 2048]\n    memoryOptions: [2048, 4096]\n",
    ))
}

#[test]
fn a_workspace_cpu_not_in_the_template_cpu_options_is_rejected() {
    let errs = against(&resources(4096, 8192), &sized_template(), None);
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.resources.cpu",
        &[
            "4096 is not offered by template \"dev\"",
            "choose one of 512, 1024, 2048",
        ],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.resources.memory",
        &["8192 is not offered", "choose one of 2048, 4096"],
    );
}

#[test]
fn a_workspace_memory_not_in_the_template_memory_options_is_rejected() {
    let errs = against(&resources(1024, 3072), &sized_template(), None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.resources.memory",
        &[
            "3072 is not offered by template \"dev\"",
            "choose one of 2048, 4096",
        ],
    );
}

#[test]
fn a_workspace_within_the_template_options_or_without_resources_is_accepted() {
    let t = sized_template();
    assert!(against(&resources(2048, 4096), &t, None).is_empty());
    assert!(against(&resources(512, 2048), &t, None).is_empty());
    assert!(against("", &t, None).is_empty());
}

#[test]
fn a_template_without_options_accepts_any_fargate_size() {
    let t = tpl_spec(&template(""));
    assert!(against(&resources(16384, 122880), &t, None).is_empty());
}

// ---------------------------------------------------------------------------
// Cron and time zones
// ---------------------------------------------------------------------------

fn autostart(cron: &str, tz: &str) -> String {
    format!("  schedule:\n    autostart:\n      cron: \"{cron}\"\n      timezone: {tz}\n")
}

#[test]
fn a_five_field_cron_in_an_iana_zone_is_accepted() {
    for cron in [
        "0 8 * * 1-5",
        "*/15 9-17 * * MON-FRI",
        "30 6 1 * *",
        "0 0 * * 0",
    ] {
        let (_, obj) = valid(&workspace(&autostart(cron, "America/Los_Angeles")));
        assert_eq!(obj.spec["schedule"]["autostart"]["cron"], cron);
        assert_eq!(
            obj.spec["schedule"]["autostart"]["timezone"],
            "America/Los_Angeles"
        );
    }
}

#[test]
fn a_six_field_cron_with_seconds_is_rejected() {
    let errs = invalid(&workspace(&autostart("0 0 8 * * 1-5", "UTC")));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.cron",
        &[
            "expected 5 fields",
            "minute hour day-of-month month day-of-week",
        ],
    );
}

#[test]
fn a_cron_with_too_few_fields_is_rejected() {
    for cron in ["0 8 * *", "@daily", ""] {
        let errs = invalid(&workspace(&autostart(cron, "UTC")));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.schedule.autostart.cron",
            &["expected 5 fields"],
        );
    }
}

#[test]
fn a_cron_with_a_bad_field_is_rejected() {
    for cron in [
        "61 8 * * *",
        "0 25 * * *",
        "0 8 32 * *",
        "0 8 * 13 *",
        "0 8 * * Funday",
        "x 8 * * *",
    ] {
        let errs = invalid(&workspace(&autostart(cron, "UTC")));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.schedule.autostart.cron",
            &[&format!("{cron:?} is not a valid cron expression")],
        );
    }
}

#[test]
fn an_unknown_time_zone_is_rejected() {
    for tz in ["Mars/Olympus", "PST8", "America/Springfield", "\"+02:00\""] {
        let errs = invalid(&workspace(&autostart("0 8 * * 1-5", tz)));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.schedule.autostart.timezone",
            &["is not an IANA time zone"],
        );
    }
    let errs = invalid(&workspace(&autostart("0 8 * * 1-5", "Mars/Olympus")));
    assert!(
        errs[0].message.contains("\"Mars/Olympus\""),
        "{}",
        errs[0].message
    );
}

#[test]
fn a_bad_cron_and_a_bad_time_zone_are_both_reported() {
    let errs = invalid(&workspace(&autostart("0 0 8 * * *", "Mars/Olympus")));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.cron",
        &["expected 5 fields"],
    );
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostart.timezone",
        &["Mars/Olympus"],
    );
}

#[test]
fn the_time_zone_defaults_to_utc() {
    let (_, obj) = valid(&workspace(
        "  schedule:\n    autostart:\n      cron: \"0 8 * * *\"\n",
    ));
    assert_eq!(obj.spec["schedule"]["autostart"]["timezone"], "UTC");
}

#[test]
fn cron_and_timezone_helpers_agree_with_decode() {
    assert!(validate::cron("0 8 * * 1-5").is_ok());
    assert!(validate::cron("0 0 8 * * 1-5")
        .unwrap_err()
        .contains("expected 5 fields"));
    assert!(validate::cron("99 8 * * *")
        .unwrap_err()
        .contains("not a valid cron expression"));
    assert_eq!(
        validate::timezone("America/Los_Angeles").unwrap(),
        chrono_tz::America::Los_Angeles
    );
    assert!(validate::timezone("Europe/Berlin").is_ok());
    assert!(validate::timezone("UTC").is_ok());
    assert!(validate::timezone("Mars/Olympus")
        .unwrap_err()
        .contains("not an IANA time zone"));
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

fn autostop(after: &str) -> String {
    format!("  schedule:\n    autostop:\n      afterInactivity: \"{after}\"\n")
}

#[test]
fn durations_like_90m_2h_and_1h30m_are_accepted() {
    assert_eq!(
        validate::duration("90m").unwrap(),
        Duration::from_secs(90 * 60)
    );
    assert_eq!(
        validate::duration("2h").unwrap(),
        Duration::from_secs(2 * 3600)
    );
    assert_eq!(
        validate::duration("1h30m").unwrap(),
        Duration::from_secs(90 * 60)
    );
    for d in ["90m", "2h", "1h30m", "1m", "87600h"] {
        let (_, obj) = valid(&workspace(&autostop(d)));
        assert_eq!(obj.spec["schedule"]["autostop"]["afterInactivity"], d);
    }
}

#[test]
fn zero_unparsable_and_negative_durations_are_rejected_on_workspace_autostop() {
    for (d, part) in [
        ("0s", "must be greater than zero"),
        ("0m", "must be greater than zero"),
        ("soon", "is not a duration"),
        ("-1h", "is not a duration"),
        ("2", "is not a duration"),
        ("", "is not a duration"),
        ("45s", "too short; the minimum is 1m"),
        ("1ns", "whole seconds"),
        ("90m500ms", "whole seconds"),
        ("3000000000h", "longer than the maximum of 10 years"),
        ("87601h", "longer than the maximum of 10 years"),
    ] {
        let errs = invalid(&workspace(&autostop(d)));
        assert_only(
            &errs,
            "workspaces/alice",
            "spec.schedule.autostop.afterInactivity",
            &[&format!("{d:?}"), part],
        );
    }
}

#[test]
fn a_policy_lifetime_or_threshold_too_large_to_compute_with_is_rejected_at_its_field() {
    for field in [
        "maxLifetime",
        "maxAfterInactivity",
        "defaultAfterInactivity",
    ] {
        let errs = invalid(&policy(&format!("  autostop:\n    {field}: 3000000000h\n")));
        assert_has(
            &errs,
            "lifecyclepolicies/org",
            &format!("spec.autostop.{field}"),
            &["longer than the maximum of 10 years"],
        );
    }
}

#[test]
fn after_inactivity_together_with_disabled_is_rejected() {
    let errs = invalid(&workspace(
        "  schedule:\n    autostop:\n      afterInactivity: 2h\n      disabled: true\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostop",
        &["either afterInactivity or disabled: true, not both"],
    );
    valid(&workspace(
        "  schedule:\n    autostop:\n      disabled: true\n",
    ));
    valid(&workspace(
        "  schedule:\n    autostop:\n      afterInactivity: 2h\n      disabled: false\n",
    ));
}

#[test]
fn bad_durations_are_rejected_on_every_policy_field() {
    for field in [
        "defaultAfterInactivity",
        "maxAfterInactivity",
        "maxLifetime",
    ] {
        for (d, part) in [
            ("0s", "greater than zero"),
            ("soon", "is not a duration"),
            ("-1h", "is not a duration"),
        ] {
            let errs = invalid(&policy(&format!("  autostop:\n    {field}: \"{d}\"\n")));
            assert_only(
                &errs,
                "lifecyclepolicies/org",
                &format!("spec.autostop.{field}"),
                &[part],
            );
        }
        for d in ["90m", "2h", "1h30m"] {
            valid(&policy(&format!("  autostop:\n    {field}: {d}\n")));
        }
    }
}

#[test]
fn a_policy_default_longer_than_its_maximum_is_rejected() {
    let errs = invalid(&policy(
        "  autostop:\n    defaultAfterInactivity: 3h\n    maxAfterInactivity: 2h\n",
    ));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostop.defaultAfterInactivity",
        &["longer than maxAfterInactivity"],
    );
    valid(&policy(
        "  autostop:\n    defaultAfterInactivity: 2h\n    maxAfterInactivity: 120m\n",
    ));
}

// ---------------------------------------------------------------------------
// Policy days
// ---------------------------------------------------------------------------

#[test]
fn policy_days_must_be_days_of_the_week() {
    valid(&policy(
        "  autostart:\n    days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]\n",
    ));
    let errs = invalid(&policy(
        "  autostart:\n    days: [Mon, Funday, Fri, \"1\"]\n",
    ));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days[1]",
        &["\"Funday\" is not a day of the week", "Mon, Tue"],
    );
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days[3]",
        &["\"1\" is not a day of the week"],
    );
}

#[test]
fn an_empty_day_or_a_weekend_word_is_not_a_day() {
    let errs = invalid(&policy("  autostart:\n    days: [\"\", weekend]\n"));
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days[0]",
        &["is not a day of the week"],
    );
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days[1]",
        &["\"weekend\""],
    );
}

// ---------------------------------------------------------------------------
// Multi-document input
// ---------------------------------------------------------------------------

fn decode_all(input: &str) -> (Vec<(Kind, DynObject)>, Vec<FieldError>) {
    let docs = parse_documents(input).expect("parses");
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        match decode(d, Some(i)) {
            Ok(o) => ok.push(o),
            Err(e) => errs.extend(e.0),
        }
    }
    (ok, errs)
}

#[test]
fn every_bad_document_in_a_multi_document_input_is_reported() {
    let input = [
        workspace_named("alice", &resources(256, 4096)),
        template(""),
        policy("  autostart:\n    days: [Funday]\n"),
        workspace_named("bob", ""),
    ]
    .join("---\n");
    let (ok, errs) = decode_all(&input);
    assert_eq!(ok.len(), 2);
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert_has(
        &errs,
        "workspaces/alice",
        "spec.resources.memory",
        &["valid memory values for cpu 256"],
    );
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.autostart.days[0]",
        &["Funday"],
    );
    let alice = errs
        .iter()
        .find(|e| e.object == "workspaces/alice")
        .unwrap();
    let org = errs
        .iter()
        .find(|e| e.object == "lifecyclepolicies/org")
        .unwrap();
    assert_eq!(alice.document, Some(0));
    assert_eq!(org.document, Some(2));
}

#[test]
fn a_document_without_a_name_is_reported_by_its_position() {
    let input = format!("{}---\napiVersion: berth.dev/v1alpha1\nkind: Workspace\nspec:\n  template:\n    name: dev\n", template(""));
    let (_, errs) = decode_all(&input);
    assert_only(&errs, "document 2", "metadata", &["required"]);
    assert_eq!(errs[0].document, Some(1));
}

#[test]
fn all_errors_of_one_document_are_reported_together() {
    let doc = workspace_named(
        "Alice",
        "  resources:\n    cpu: 256\n    memory: 4096\n\
         \x20 schedule:\n    autostart:\n      cron: \"* * * * * *\"\n      timezone: Mars/Olympus\n\
         \x20   autostop:\n      afterInactivity: soon\n",
    );
    let errs = invalid(&doc);
    assert_eq!(errs.len(), 5, "{}", show(&errs));
    for field in [
        "metadata.name",
        "spec.resources.memory",
        "spec.schedule.autostart.cron",
        "spec.schedule.autostart.timezone",
        "spec.schedule.autostop.afterInactivity",
    ] {
        assert!(
            errs.iter()
                .any(|e| e.field == field && e.object == "workspaces/Alice"),
            "{field}: {}",
            show(&errs)
        );
    }
}

#[test]
fn errors_render_as_object_field_and_message() {
    let docs = parse_documents(&workspace(&resources(256, 4096))).unwrap();
    let e = decode(&docs[0], Some(0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "workspaces/alice: spec.resources.memory: 4096 MiB is not valid with cpu 256; valid memory values for cpu 256: 512, 1024, 2048"
    );
}

// ---------------------------------------------------------------------------
// YAML limits and strict booleans
// ---------------------------------------------------------------------------

#[test]
fn a_billion_laughs_alias_bomb_is_rejected_quickly() {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(",");
        s.push_str(&format!("{c}: &{c} [{refs}]\n"));
        prev = c;
    }
    // as a Berth document, too
    let doc = format!("{s}apiVersion: berth.dev/v1alpha1\nkind: Workspace\n");
    let before = peak_rss_kib();
    for input in [s.as_str(), doc.as_str()] {
        let t = Instant::now();
        let r = parse_documents(input);
        let took = t.elapsed();
        assert!(matches!(r, Err(ParseError::Yaml(_))), "{r:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    // Expanded, the bomb is 9^9 strings (gigabytes). The process's peak
    // resident size (shared with tests running in parallel, hence the
    // generous bound) must not jump.
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 512 * 1024,
            "peak RSS grew from {before} KiB to {after} KiB"
        );
    }
}

/// The process's peak resident set size, where the platform reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_deeply_nested_alias_chain_is_rejected_quickly() {
    // Each level doubles the size: 2^40 nodes if expanded.
    let mut s = String::from("l0: &l0 [x, x]\n");
    for i in 1..=40 {
        s.push_str(&format!("l{i}: &l{i} [*l{p}, *l{p}]\n", p = i - 1));
    }
    let t = Instant::now();
    let r = parse_documents(&s);
    assert!(r.is_err(), "an exponential alias chain must be rejected");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn ordinary_anchors_and_aliases_still_work() {
    let input = "\
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: alice
  labels: &l {team: web}
  annotations: *l
spec:
  template: {name: dev}
";
    let (_, obj) = valid(input);
    assert_eq!(
        obj.metadata.annotations.get("team").map(String::as_str),
        Some("web")
    );
}

#[test]
fn more_than_max_documents_are_rejected() {
    let one = "a: 1\n---\n";
    let input = one.repeat(MAX_DOCUMENTS + 1);
    assert!(matches!(
        parse_documents(&input),
        Err(ParseError::TooManyDocuments)
    ));
    let json = format!("[{}]", vec!["{}"; MAX_DOCUMENTS + 1].join(","));
    assert!(matches!(
        parse_documents(&json),
        Err(ParseError::TooManyDocuments)
    ));
    let list = format!(
        "kind: List\nitems:\n{}",
        "- a: 1\n".repeat(MAX_DOCUMENTS + 1)
    );
    assert!(matches!(
        parse_documents(&list),
        Err(ParseError::TooManyDocuments)
    ));
    let err = ParseError::TooManyDocuments.to_string();
    assert!(err.contains(&MAX_DOCUMENTS.to_string()), "{err}");
}

#[test]
fn exactly_max_documents_are_accepted() {
    let json = format!("[{}]", vec!["{\"a\":1}"; MAX_DOCUMENTS].join(","));
    assert_eq!(parse_documents(&json).unwrap().len(), MAX_DOCUMENTS);
    // as a YAML stream, with a leading separator, a trailing one and empty documents between
    let yaml = format!("---\n{}---\n---\n", "a: 1\n---\n".repeat(MAX_DOCUMENTS));
    assert_eq!(parse_documents(&yaml).unwrap().len(), MAX_DOCUMENTS);
}

#[test]
fn a_yaml_stream_far_over_max_documents_is_rejected_as_too_many_documents() {
    let input = "a: 1\n---\n".repeat(3 * MAX_DOCUMENTS);
    let t = Instant::now();
    assert!(matches!(
        parse_documents(&input),
        Err(ParseError::TooManyDocuments)
    ));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    // a separator storm of empty documents is bounded too
    let storm = "---\n".repeat(3 * MAX_DOCUMENTS);
    assert!(matches!(
        parse_documents(&storm),
        Err(ParseError::TooManyDocuments)
    ));
}

#[test]
fn an_oversized_input_or_document_is_rejected() {
    let huge = " ".repeat(berth::api::yaml::MAX_INPUT_BYTES + 1);
    assert!(matches!(
        parse_documents(&huge),
        Err(ParseError::TooLarge(_))
    ));
    let big = format!(
        "a: {}\n",
        "x".repeat(berth::api::yaml::MAX_DOCUMENT_BYTES + 1)
    );
    assert!(matches!(
        parse_documents(&big),
        Err(ParseError::DocumentTooLarge(1))
    ));
}

#[test]
fn no_yes_and_off_stay_strings() {
    let docs = parse_documents("a: NO\nb: yes\nc: off\nd: On\ne: y\nf: true\ng: false\n").unwrap();
    assert_eq!(docs[0]["a"], json!("NO"));
    assert_eq!(docs[0]["b"], json!("yes"));
    assert_eq!(docs[0]["c"], json!("off"));
    assert_eq!(docs[0]["d"], json!("On"));
    assert_eq!(docs[0]["e"], json!("y"));
    assert_eq!(docs[0]["f"], json!(true));
    assert_eq!(docs[0]["g"], json!(false));
}

#[test]
fn a_string_parameter_default_no_stays_the_string_no() {
    let t = tpl_spec(&template(
        "  parameters:\n  - name: country\n    type: string\n    default: NO\n    options: [NO, SE, DK]\n\
         \x20 - name: mode\n    type: string\n    default: off\n",
    ));
    assert_eq!(t.parameters[0].default, Some(json!("NO")));
    assert_eq!(
        t.parameters[0].options,
        vec![json!("NO"), json!("SE"), json!("DK")]
    );
    assert_eq!(t.parameters[1].default, Some(json!("off")));
    // a workspace writing `yes` for a string parameter gets the string
    let t = tpl_spec(&template(
        "  parameters:\n  - name: answer\n    type: string\n",
    ));
    let ws = ws_spec("  parameters:\n    answer: yes\n");
    assert_eq!(ws.parameters["answer"], json!("yes"));
    let mut errs = Errors::new("workspaces/alice", None);
    workspace_against_template(&mut errs, &ws, &t, None);
    assert!(errs.is_empty(), "{}", show(&errs.list));
}

#[test]
fn a_bool_field_given_yes_is_a_type_error_not_true() {
    let errs = invalid(&workspace("  running: yes\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.running",
        &["invalid type", "\"yes\"", "boolean"],
    );

    let errs = invalid(&workspace(
        "  schedule:\n    autostop:\n      disabled: on\n",
    ));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.schedule.autostop.disabled",
        &["invalid type", "\"on\""],
    );

    let errs = invalid(&template("").replace(
        "fileSystemId: fs-1",
        "fileSystemId: fs-1\n    assignPublicIp: Y",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.infrastructure.assignPublicIp",
        &["invalid type", "\"Y\""],
    );

    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: bool\n    mutable: yes\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].mutable",
        &["invalid type", "\"yes\""],
    );

    let errs = invalid(&policy("  requireActiveVersion: no\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.requireActiveVersion",
        &["invalid type", "\"no\""],
    );

    let errs = invalid(&template(
        "  parameters:\n  - name: p\n    type: bool\n    default: yes\n",
    ));
    assert_only(
        &errs,
        "workspacetemplates/dev",
        "spec.parameters[0].default",
        &["\"yes\" is not a bool"],
    );
}

// ---------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------

#[test]
fn decode_fills_workspace_defaults() {
    let (kind, obj) = valid(&workspace(""));
    assert_eq!(kind, Kind::Workspace);
    assert_eq!(obj.api_version, "berth.dev/v1alpha1");
    assert_eq!(obj.kind, "Workspace");
    assert_eq!(obj.metadata.namespace, "default");
    assert_eq!(obj.spec["running"], json!(true));
    assert_eq!(obj.spec["deletionPolicy"], json!("Retain"));
    assert_eq!(obj.spec["owner"], json!("alice"));
    assert_eq!(obj.spec["template"], json!({"name": "dev"}));
    assert_eq!(obj.status, Value::Null);
}

#[test]
fn two_spellings_of_the_same_workspace_decode_to_equal_objects() {
    let short = workspace("  schedule:\n    autostart: {cron: \"0 8 * * 1-5\"}\n    autostop: {afterInactivity: 2h}\n");
    let long = "\
apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: alice
  namespace: default
  uid: 2f1c1f6e-4a7d-4b8e-9c53-0d6a1d1d2b11
  generation: 7
  creationTimestamp: 2024-01-01T00:00:00Z
  finalizers: [berth.dev/efs]
spec:
  owner: alice
  running: true
  template:
    name: dev
  parameters: {}
  deletionPolicy: Retain
  schedule:
    autostart:
      cron: 0 8 * * 1-5
      timezone: UTC
    autostop:
      afterInactivity: 2h
      disabled: false
status:
  phase: Running
";
    let json_spelling = r#"{"apiVersion":"berth.dev/v1alpha1","kind":"Workspace","metadata":{"name":"alice"},
        "spec":{"owner":"alice","template":{"name":"dev"},
        "schedule":{"autostart":{"cron":"0 8 * * 1-5"},"autostop":{"afterInactivity":"2h"}}}}"#;
    let a = valid(&short);
    let b = valid(long);
    let c = valid(json_spelling);
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert!(
        a.1.metadata.uid.is_none()
            && a.1.metadata.generation.is_none()
            && a.1.metadata.finalizers.is_empty()
    );
}

#[test]
fn decode_keeps_resource_version_for_conditional_writes_and_drops_other_server_fields() {
    let doc = workspace("").replace(
        "  name: alice\n",
        "  name: alice\n  resourceVersion: \"42\"\n  generation: 3\n  uid: 2f1c1f6e-4a7d-4b8e-9c53-0d6a1d1d2b11\n",
    );
    let (_, obj) = valid(&doc);
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("42"));
    assert_eq!(obj.metadata.generation, None);
    assert_eq!(obj.metadata.uid, None);
}

#[test]
fn two_spellings_of_the_same_template_decode_to_equal_objects() {
    let short = template(
        "  parameters:\n  - name: gpu\n    type: bool\n  scripts:\n  - name: s\n    script: echo\n",
    );
    let long = template_with_resources(
        "  resources:\n    default:\n      cpu: 1024\n      memory: 2048\n    cpuOptions: []\n\
         \x20 parameters:\n  - name: gpu\n    type: bool\n    mutable: false\n    options: []\n    displayName: \"\"\n\
         \x20 scripts:\n  - name: s\n    script: echo\n    blocksLogin: true\n",
    )
    .replace(
        "    homePath: /home/dev\n",
        "    homePath: /home/dev\n    uid: 1000\n    gid: 1000\n    stopTimeout: 30\n    env: {}\n",
    )
    .replace("    fileSystemId: fs-1\n", "    fileSystemId: fs-1\n    efsRootDirectory: /home\n    assignPublicIp: false\n");
    let (_, a) = valid(&short);
    let (_, b) = valid(&long);
    assert_eq!(a, b);
    assert_eq!(a.spec["container"]["uid"], json!(1000));
    assert_eq!(a.spec["container"]["stopTimeout"], json!(30));
    assert_eq!(a.spec["infrastructure"]["efsRootDirectory"], json!("/home"));
    assert_eq!(a.spec["scripts"][0]["blocksLogin"], json!(true));
    assert_eq!(a.spec["parameters"][0]["mutable"], json!(false));
}

#[test]
fn two_spellings_of_the_same_policy_decode_to_equal_objects() {
    let (_, a) = valid(&policy("  {}\n"));
    let (_, b) = valid(&policy(
        "  autostop:\n    allowUserOverride: true\n    allowUserDisable: false\n\
         \x20 autostart:\n    allowed: true\n    days: []\n  requireActiveVersion: false\n",
    ));
    assert_eq!(a, b);
    assert_eq!(a.spec["autostop"]["allowUserOverride"], json!(true));
    assert_eq!(a.spec["autostart"]["allowed"], json!(true));
}

#[test]
fn a_workspace_spec_that_differs_decodes_to_a_different_object() {
    let (_, a) = valid(&workspace(""));
    let (_, b) = valid(&workspace("  running: false\n"));
    let (_, c) = valid(&workspace("  deletionPolicy: Delete\n"));
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(b.spec["running"], json!(false));
    assert_eq!(c.spec["deletionPolicy"], json!("Delete"));
}

#[test]
fn a_number_written_as_1_0_matches_the_option_1() {
    // YAML reads `1` as an integer and `1.0` as a float; both are the number one.
    valid(&template(
        "  parameters:\n  - name: n\n    type: number\n    options: [1, 2]\n    default: 1.0\n",
    ));
    let t = tpl_spec(&template(
        "  parameters:\n  - name: n\n    type: number\n    options: [1.0, 2]\n    default: 1\n",
    ));
    assert!(against("  parameters:\n    n: 2.0\n", &t, None).is_empty());
    let errs = against("  parameters:\n    n: 3\n", &t, None);
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.n",
        &["3 is not one of the options"],
    );
    // and rewriting an immutable `1` as `1.0` is no change
    let before = ws_spec("  parameters:\n    n: 1\n");
    assert!(against("  parameters:\n    n: 1.0\n", &t, Some(&before)).is_empty());
    let errs = against("  parameters:\n    n: 2\n", &t, Some(&before));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.parameters.n",
        &["is immutable"],
    );
}

#[test]
fn an_unknown_field_named_like_its_parent_is_reported_below_it() {
    let errs =
        invalid(&workspace("").replace("    name: dev\n", "    name: dev\n    template: x\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "spec.template.template",
        &["unknown field `template`"],
    );
    let errs = invalid(&workspace("").replace("  name: alice\n", "  name: alice\n  metadata: x\n"));
    assert_only(
        &errs,
        "workspaces/alice",
        "metadata.metadata",
        &["unknown field `metadata`"],
    );
}

// ---------------------------------------------------------------------------
// Hostile values that reached ECS verbatim before
// ---------------------------------------------------------------------------

#[test]
fn values_that_would_reach_ecs_verbatim_are_refused_with_their_field() {
    let t = |body: &str| invalid(&template(body));
    let image = invalid(
        &(TEMPLATE_HEAD.replace("ghcr.io/acme/dev:1", "\"ghcr.io/acme/dev:1\\nRUN x\"")
            + DEFAULT_RESOURCES),
    );
    assert_has(
        &image,
        "workspacetemplates/dev",
        "spec.container.image",
        &["not an image reference"],
    );
    let spaced = invalid(
        &(TEMPLATE_HEAD.replace("ghcr.io/acme/dev:1", "\"ghcr.io/acme/dev 1\"")
            + DEFAULT_RESOURCES),
    );
    assert_has(
        &spaced,
        "workspacetemplates/dev",
        "spec.container.image",
        &["no spaces"],
    );
    let root = invalid(
        &(TEMPLATE_HEAD.replace(
            "    fileSystemId: fs-1\n",
            "    fileSystemId: fs-1\n    efsRootDirectory: /../..\n",
        ) + DEFAULT_RESOURCES),
    );
    assert_has(
        &root,
        "workspacetemplates/dev",
        "spec.infrastructure.efsRootDirectory",
        &["'..'"],
    );
    let group = invalid(
        &(TEMPLATE_HEAD.replace(
            "    fileSystemId: fs-1\n",
            "    fileSystemId: fs-1\n    logGroup: \"/ecs/x\\ny\"\n",
        ) + DEFAULT_RESOURCES),
    );
    assert_has(
        &group,
        "workspacetemplates/dev",
        "spec.infrastructure.logGroup",
        &["log group name"],
    );
    for reserved in ["BERTH_AGENT_TOKEN", "HOME", "BERTH_API_URL"] {
        let e = invalid(
            &(TEMPLATE_HEAD.replace(
                "    homePath: /home/dev\n",
                &format!("    homePath: /home/dev\n    env:\n      {reserved}: x\n"),
            ) + DEFAULT_RESOURCES),
        );
        assert_has(
            &e,
            "workspacetemplates/dev",
            &format!("spec.container.env.{reserved}"),
            &["set by Berth"],
        );
    }
    let params = t("  parameters:\n    - {name: a-b, type: string, default: x}\n    - {name: a_b, type: string, default: y}\n");
    assert_has(
        &params,
        "workspacetemplates/dev",
        "spec.parameters[1].name",
        &["BERTH_PARAM_A_B"],
    );
    let never = invalid(&workspace(
        "  schedule:\n    autostart:\n      cron: \"0 8 30 2 *\"\n",
    ));
    assert_has(
        &never,
        "workspaces/alice",
        "spec.schedule.autostart.cron",
        &["never fires"],
    );
    // February 29th does fire (every four years).
    valid(&workspace(
        "  schedule:\n    autostart:\n      cron: \"0 8 29 2 *\"\n",
    ));
}

#[test]
fn dormancy_needs_a_threshold_and_bounded_durations() {
    valid(&policy(
        "  dormancyThreshold: 720h\n  dormantDeletion: 720h\n  dormancyNotice: 72h\n",
    ));
    let errs = invalid(&policy("  dormantDeletion: 720h\n"));
    assert_only(
        &errs,
        "lifecyclepolicies/org",
        "spec.dormantDeletion",
        &["needs spec.dormancyThreshold"],
    );
    let errs = invalid(&policy(
        "  dormancyThreshold: 3000000000h\n  dormancyNotice: 1ns\n",
    ));
    assert_has(
        &errs,
        "lifecyclepolicies/org",
        "spec.dormancyThreshold",
        &[],
    );
    assert_has(&errs, "lifecyclepolicies/org", "spec.dormancyNotice", &[]);
    assert_eq!(errs.len(), 2, "{}", show(&errs));
}

#[test]
fn efs_iam_authorization_needs_a_task_role_and_registry_credentials_need_a_secret_arn() {
    let no_role = invalid(
        &(TEMPLATE_HEAD.replace(
            "    fileSystemId: fs-1\n",
            "    fileSystemId: fs-1\n    efsIamAuthorization: true\n",
        ) + DEFAULT_RESOURCES),
    );
    assert_only(
        &no_role,
        "workspacetemplates/dev",
        "spec.infrastructure.efsIamAuthorization",
        &["taskRoleArn"],
    );
    let with_role = TEMPLATE_HEAD.replace(
        "    fileSystemId: fs-1\n",
        "    fileSystemId: fs-1\n    efsIamAuthorization: true\n    taskRoleArn: arn:aws:iam::123456789012:role/berth-task\n",
    ) + DEFAULT_RESOURCES;
    valid(&with_role);
    let creds = |arn: &str| {
        TEMPLATE_HEAD.replace(
            "    homePath: /home/dev\n",
            &format!("    homePath: /home/dev\n    repositoryCredentials:\n      credentialsParameter: \"{arn}\"\n"),
        ) + DEFAULT_RESOURCES
    };
    let (_, obj) = valid(&creds(
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:berth/ghcr-AbCdEf",
    ));
    assert_eq!(
        obj.spec["container"]["repositoryCredentials"]["credentialsParameter"],
        json!("arn:aws:secretsmanager:us-west-2:123456789012:secret:berth/ghcr-AbCdEf")
    );
    for bad in [
        "ghcr-token",
        "arn:aws:ssm:us-west-2:123456789012:parameter/ghcr",
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:",
    ] {
        assert_only(
            &invalid(&creds(bad)),
            "workspacetemplates/dev",
            "spec.container.repositoryCredentials.credentialsParameter",
            &["Secrets Manager"],
        );
    }
}
