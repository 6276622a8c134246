//! Webhook deliveries reach `forge-launch serve` from the network: any
//! signature header and body is refused or accepted without a panic, a
//! correct signature always verifies, and any payload (bytes, or GitHub's
//! example with fields replaced by arbitrary values) is classified, and its
//! facts validated, without a panic.

use forgexec::launch::event::resolve;
use forgexec::launch::serve::webhook::{classify, Event, PushPolicy, WebhookKey};
use proptest::prelude::*;
use serde_json::Value;

use super::fuzz;

const OPENED: &str = include_str!("../../fixtures/webhooks/pull_request-opened.json");

fn events() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("ping"),
        Just("pull_request"),
        Just("push"),
        Just("issues")
    ]
}

#[test]
fn any_signature_and_body_verify_or_are_refused() {
    fuzz(
        "webhook_signature",
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::option::of("(sha256=)?[0-9a-fA-Fz]{0,70}"),
        ),
        |(secret, body, header)| {
            let key = WebhookKey::new(&secret);
            let good = key.sign(&body);
            prop_assert!(key.verify(Some(&good), &body).is_ok());
            if let Some(header) = header {
                if header != good {
                    prop_assert!(key.verify(Some(&header), &body).is_err());
                }
            }
            Ok(())
        },
    );
}

#[test]
fn any_body_is_classified_or_refused() {
    fuzz(
        "webhook_any_body",
        (events(), proptest::collection::vec(any::<u8>(), 0..1024)),
        |(event, body)| {
            let _ = classify(event, &body, &PushPolicy::default());
            Ok(())
        },
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,80}".prop_map(Value::from),
        "[0-9a-f]{40}".prop_map(Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
    ]
}

#[test]
fn githubs_payload_with_any_field_values_is_classified_without_panic() {
    let base: Value = serde_json::from_str(OPENED).expect("fixture is JSON");
    let fields = [
        "/action",
        "/number",
        "/pull_request",
        "/pull_request/number",
        "/pull_request/head",
        "/pull_request/head/sha",
        "/pull_request/head/repo",
        "/pull_request/head/repo/full_name",
        "/pull_request/head/repo/name",
        "/pull_request/head/repo/owner/login",
        "/pull_request/commits",
        "/repository",
        "/repository/name",
        "/repository/owner/login",
        "/repository/default_branch",
        "/installation/id",
        "/ref",
        "/after",
    ];
    fuzz(
        "webhook_fields",
        (
            events(),
            proptest::collection::vec((0..fields.len(), json_value()), 1..6),
        ),
        |(event, changes)| {
            let mut payload = base.clone();
            for (field, value) in changes {
                if let Some(slot) = payload.pointer_mut(fields[field]) {
                    *slot = value;
                }
            }
            let body = payload.to_string();
            if let Ok(Event::Build(req)) = classify(event, body.as_bytes(), &PushPolicy::default())
            {
                prop_assert_eq!(req.raw.owner.as_deref(), Some(req.owner.as_str()));
                prop_assert_eq!(req.raw.repo.as_deref(), Some(req.repo.as_str()));
                prop_assert!(req.raw.status_url.is_none());
                let id = "20261206T230000000-0000".parse().expect("a build id");
                let _ = resolve(req.raw, &id, false);
            }
            Ok(())
        },
    );
}
