//! Which Secrets are resource tokens: the backup lists them by name, a restore gives them new
//! values. One predicate for both, so the list a backup shows is the list a restore regenerates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::selector;
use crate::api::TOKEN_LABEL;

/// Whether an object (with its `apiVersion` and `kind`) is a resource token: a v1 Secret
/// labelled `rewind.dev/token=true` or matched by the backup's `tokenSelector` (pure).
pub fn is_token(object: &Value, token_selector: Option<&LabelSelector>) -> bool {
    if object["kind"].as_str() != Some("Secret") || object["apiVersion"].as_str() != Some("v1") {
        return false;
    }
    let labels: BTreeMap<String, String> =
        serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
    labels.get(TOKEN_LABEL).map(String::as_str) == Some("true")
        || token_selector.is_some_and(|s| selector::matches(s, &labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labelled_secrets_are_tokens_and_others_are_not() {
        let token = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k", "labels": {"rewind.dev/token": "true"}}});
        let plain = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}});
        assert!(is_token(&token, None));
        assert!(!is_token(&plain, None));
    }

    #[test]
    fn secrets_the_token_selector_matches_are_tokens_and_config_maps_never() {
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"kind": "api-key"}})).expect("selector");
        let keyed = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k", "labels": {"kind": "api-key"}}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k", "labels": {"rewind.dev/token": "true"}}});
        assert!(is_token(&keyed, Some(&selector)));
        assert!(!is_token(&keyed, None));
        assert!(!is_token(&config, Some(&selector)));
    }
}
