//! Typed audit details: a record's `detail` as a struct whose fields are
//! named once, next to the code that writes it, and which a test can parse
//! records back into (`deny_unknown_fields`): a field added, renamed or lost
//! fails that test instead of changing the log quietly.
//!
//! ```ignore
//! event(Kind::SshCertIssue, actor, source).on(user).with(&CertIssued { .. })
//! ```
//!
//! Owns the trait and its check only; the structs live with their
//! subsystems (`access::sso`, `access::certs`, `portal::sso_records`,
//! `ha::record`). Serialized into a `serde_json::Value`, so the log's bytes
//! (sorted keys, see [`super::chain`]) are what `json!` made before.

use serde::Serialize;

use super::event::{Kind, NewAuditEvent};

/// The detail of records of [`Detail::KINDS`].
pub trait Detail: Serialize {
    /// The kinds whose records carry this detail.
    const KINDS: &'static [Kind];
}

impl NewAuditEvent {
    /// The same event with a typed `detail`, serialized, then capped as
    /// [`NewAuditEvent::detail`] caps.
    pub fn with<D: Detail>(self, detail: &D) -> NewAuditEvent {
        debug_assert!(
            D::KINDS.contains(&self.kind),
            "a {} is no detail of {}",
            std::any::type_name::<D>(),
            self.kind
        );
        let value = serde_json::to_value(detail).unwrap_or_else(|err| {
            // Structs of strings, numbers and lists always serialize.
            serde_json::Value::String(format!("the detail did not serialize: {err}"))
        });
        self.detail(value)
    }
}

/// Parses a stored record's `detail` back into `D`, for tests: the record's
/// kind must be one of `D::KINDS`, and the detail must have exactly `D`'s
/// fields.
#[cfg(test)]
pub fn parse_back<D: Detail + serde::de::DeserializeOwned>(
    kind: &str,
    detail: &serde_json::Value,
) -> Result<D, String> {
    if !D::KINDS.iter().any(|k| k.as_str() == kind) {
        return Err(format!(
            "{kind} is not one of {}'s kinds {:?}",
            std::any::type_name::<D>(),
            D::KINDS
        ));
    }
    serde_json::from_value(detail.clone()).map_err(|err| {
        format!(
            "{kind} {detail}: not a {}: {err}",
            std::any::type_name::<D>()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::audit::event::{Actor, Source, event};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Added {
        groups: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    }

    impl Detail for Added {
        const KINDS: &'static [Kind] = &[Kind::UserAdd];
    }

    #[test]
    fn a_typed_detail_is_the_json_it_always_was_and_parses_back_exactly() {
        let added = Added {
            groups: vec!["research".into(), "x".repeat(2000)],
            note: None,
        };
        let e = event(Kind::UserAdd, Actor::Gateway, Source::Local)
            .on("alice")
            .with(&added);
        assert_eq!(e.detail["groups"][0], "research");
        assert!(e.detail.get("note").is_none(), "{}", e.detail);
        // Capped as `.detail` caps.
        let long = e.detail["groups"][1].as_str().unwrap();
        assert!(long.contains("truncated"), "{long}");
        let back: Added = parse_back("user.add", &e.detail).unwrap();
        assert_eq!(back.groups[0], "research");

        let extra = serde_json::json!({"groups": [], "other": 1});
        let err = parse_back::<Added>("user.add", &extra).unwrap_err();
        assert!(err.contains("unknown field `other`"), "{err}");
        let missing = serde_json::json!({"note": "n"});
        let err = parse_back::<Added>("user.add", &missing).unwrap_err();
        assert!(err.contains("missing field `groups`"), "{err}");
        let err = parse_back::<Added>("user.delete", &e.detail).unwrap_err();
        assert!(err.contains("not one of"), "{err}");
    }
}
