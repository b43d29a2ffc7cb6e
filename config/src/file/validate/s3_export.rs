//! `[audit.s3]`: the bucket (S3's naming rules), the key prefix and the
//! retention, and that `[aws]` is there to reach S3 with.

use super::super::S3ExportConfig;
use super::super::raw::RawS3Export;
use super::Checker;

/// S3 keeps a compliance lock for at least a day.
const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl Checker<'_> {
    pub(super) fn s3_export(&mut self, raw: RawS3Export, has_aws: bool) -> Option<S3ExportConfig> {
        if !has_aws {
            self.problem(
                "audit.s3.bucket",
                "[audit.s3] writes with the gateway's AWS credentials: add an [aws] section",
            );
        }
        let bucket = raw.bucket.trim();
        let bucket_ok = is_bucket_name(bucket);
        if !bucket_ok {
            self.problem(
                "audit.s3.bucket",
                format!(
                    "{bucket:?} is not an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit (create it with Object Lock enabled)"
                ),
            );
        }
        let prefix = raw.prefix.trim().trim_matches('/');
        let prefix_ok = prefix.is_empty()
            || (prefix
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
                && prefix.chars().all(|c| c.is_ascii_graphic()));
        if !prefix_ok {
            self.problem(
                "audit.s3.prefix",
                format!("{prefix:?} is not a key prefix: printable ASCII without spaces, no empty, \".\" or \"..\" parts"),
            );
        }
        let retention = self.duration("audit.s3.retention", &raw.retention);
        if let Some(short) = retention.filter(|r| *r < MIN_RETENTION) {
            self.problem(
                "audit.s3.retention",
                format!("{short:?} is shorter than S3's shortest lock, one day (\"1d\"); the issue's evidence wants \"400d\""),
            );
            return None;
        }
        (has_aws && bucket_ok && prefix_ok).then_some(())?;
        Some(S3ExportConfig {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            retention: retention?,
        })
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::is_bucket_name;

    #[test]
    fn bucket_names() {
        for good in ["abc", "gatehouse-audit", "a.b-c1", &"a".repeat(63)] {
            assert!(is_bucket_name(good), "{good}");
        }
        for bad in [
            "ab",
            "Audit",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
    }
}
