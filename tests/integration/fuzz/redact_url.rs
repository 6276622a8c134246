//! URL redaction: whatever a URL holds, the redacted form never shows its
//! password or the values of credential query parameters, redacting twice
//! changes nothing, and any text is handled without a panic.

use forgexec::http::{has_credentials, redact_url, url_secrets};
use proptest::prelude::*;

use super::fuzz;

#[test]
fn any_text_is_redacted_without_panic_and_idempotently() {
    fuzz("redact_url_any", any::<String>(), |text| {
        let once = redact_url(&text);
        prop_assert_eq!(redact_url(&once), once.clone());
        let _ = has_credentials(&text);
        for secret in url_secrets(&text) {
            prop_assert!(!secret.is_empty());
        }
        Ok(())
    });
}

#[test]
fn passwords_and_signatures_never_survive() {
    let secret_param = prop_oneof![
        Just("X-Amz-Signature"),
        Just("X-Amz-Credential"),
        Just("X-Amz-Security-Token"),
        Just("x-goog-signature"),
        Just("sig"),
        Just("Signature"),
        Just("token"),
        Just("access_token"),
        Just("api_key"),
        Just("password"),
    ];
    let plain_param = prop_oneof![
        Just("X-Amz-Date"),
        Just("X-Amz-Expires"),
        Just("X-Amz-SignedHeaders"),
        Just("sv"),
        Just("page"),
    ];
    let url = (
        "(http|https|HTTP)",
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of("[A-Za-z0-9%!$&'()*+,;=._~-]{1,20}"),
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        "(/[A-Za-z0-9._~%-]{0,12}){0,4}",
        proptest::collection::vec((secret_param, "[A-Za-z0-9%/+=-]{1,30}"), 0..3),
        proptest::collection::vec((plain_param, "[A-Za-z0-9]{0,10}"), 0..3),
        proptest::option::of("[A-Za-z0-9=&]{0,20}"),
    );
    fuzz(
        "redact_url_secrets",
        url,
        |(scheme, user, password, host, path, secrets, plain, fragment)| {
            let mut url = format!("{scheme}://");
            let password = password.map(|p| format!("PW!{p}"));
            match (&user, &password) {
                (Some(user), Some(password)) => url.push_str(&format!("{user}:{password}@")),
                (None, Some(password)) => url.push_str(&format!("{password}@")),
                (Some(user), None) => url.push_str(&format!("{user}@")),
                (None, None) => {}
            }
            url.push_str(&host);
            url.push_str(&path);
            let mut params: Vec<String> = Vec::new();
            let mut values = Vec::new();
            for (name, value) in &secrets {
                let value = format!("SeCrEt!{value}");
                params.push(format!("{name}={value}"));
                values.push(value);
            }
            for (name, value) in &plain {
                params.push(format!("{name}={value}"));
            }
            if !params.is_empty() {
                url.push('?');
                url.push_str(&params.join("&"));
            }
            if let Some(fragment) = &fragment {
                url.push('#');
                url.push_str(fragment);
            }
            let redacted = redact_url(&url);
            if let Some(password) = &password {
                prop_assert!(!redacted.contains(password.as_str()), "{url} → {redacted}");
                prop_assert!(has_credentials(&url));
                prop_assert!(url_secrets(&url).contains(password));
            }
            for value in &values {
                prop_assert!(!redacted.contains(value.as_str()), "{url} → {redacted}");
                prop_assert!(has_credentials(&url));
            }
            prop_assert!(redacted.contains(host.as_str()), "{url} → {redacted}");
            Ok(())
        },
    );
}
