//! How the AWS provisioner fails, in words an operator can act on: a missing
//! IAM permission names the action, throttling says it was retried, "not on
//! EC2" is said plainly. Every SDK call's error goes through [`classify`].

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::keys::LocalKeyError;

/// Boxed cause kept for `source()`.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How many attempts each AWS call gets (retries back off exponentially,
/// with jitter); throttling and transient network errors are retried.
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "not running on EC2: the instance metadata service at {endpoint} did not answer ({detail}); on an instance, check that IMDSv2 is enabled with a hop limit that reaches accessd; off an instance, set aws.region, aws.instance_id, aws.network_interface_id, aws.vpc_id, aws.subnet_id and aws.availability_zone"
    )]
    NotOnEc2 { endpoint: String, detail: String },
    #[error("instance metadata at {path} could not be read: {detail}")]
    Metadata { path: String, detail: String },
    #[error(
        "AWS refused {action} ({code}): the gateway's AWS identity lacks this permission; add \"{action}\" to its IAM policy (packaging/iam-policy.json lists every action gatehouse calls, each narrowed to this gateway's tag, VPC and route tables: check the substitutions and the instance's gatehouse:gateway tag). AWS said: {message}"
    )]
    Denied {
        action: &'static str,
        code: String,
        message: String,
    },
    #[error(
        "AWS throttled {action} ({code}) and it still failed after {MAX_ATTEMPTS} attempts with backoff; wait and run `accessctl aws apply` again"
    )]
    Throttled { action: &'static str, code: String },
    #[error("cannot reach AWS for {action}: {source}")]
    Unreachable {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{action} failed ({code}): {message}")]
    Service {
        action: &'static str,
        code: String,
        message: String,
    },
    #[error("{action} failed: {source}")]
    Other {
        action: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{action} answered without {what}")]
    Incomplete {
        action: &'static str,
        what: &'static str,
    },
    #[error(
        "more than one {what} is tagged gatehouse:gateway={gateway} ({ids}); gatehouse will not guess which is its own: delete or untag the extra ones"
    )]
    Ambiguous {
        what: &'static str,
        gateway: String,
        ids: String,
    },
    #[error("the SSM parameter {name} does not hold {what} (32 bytes, base64); {remedy}")]
    MalformedKey {
        name: String,
        what: &'static str,
        remedy: &'static str,
    },
    #[error("cannot keep the SSM key in the state dir: {0}")]
    LocalKey(#[from] LocalKeyError),
    #[error(
        "this gateway is no longer the active one of its HA pair (its lease ran out or was taken over), so it changes nothing that belongs to the active one"
    )]
    NotActive,
    #[error(
        "{what} did not answer within {limit:?}, the time this gateway may still act as the active one (or at most a fenced call's timeout)"
    )]
    TimedOut { what: &'static str, limit: Duration },
    #[error(
        "the change was made but its record could not be written yet (it is kept and written once the store takes records again), so apply stopped: {0}"
    )]
    Audit(#[from] crate::store::StoreError),
}

impl AwsError {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Denied { code, .. }
            | Self::Throttled { code, .. }
            | Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Turns an SDK error of `action` (e.g. `"ec2:CreateRoute"`) into an [`AwsError`].
pub fn classify<E, R>(action: &'static str, err: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("unknown").to_string();
            let message = context.err().message().unwrap_or("").to_string();
            from_code(action, code, message)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => AwsError::Unreachable {
            action,
            source: DisplayErrorContext(err).to_string().into(),
        },
        _ => AwsError::Other {
            action,
            source: DisplayErrorContext(err).to_string().into(),
        },
    }
}

/// The error for an AWS error `code` answered to `action`.
pub fn from_code(action: &'static str, code: String, message: String) -> AwsError {
    match code.as_str() {
        "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedAccess"
        | "AuthFailure" => AwsError::Denied {
            action,
            code,
            message,
        },
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException" => AwsError::Throttled { action, code },
        _ => AwsError::Service {
            action,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_the_action_and_the_policy() {
        let err = from_code(
            "ec2:CreateRoute",
            "UnauthorizedOperation".into(),
            "You are not authorized to perform this operation.".into(),
        );
        assert!(matches!(err, AwsError::Denied { .. }));
        let text = err.to_string();
        assert!(text.contains("\"ec2:CreateRoute\""), "{text}");
        assert!(text.contains("iam-policy.json"), "{text}");
        let ssm = from_code(
            "ssm:GetParameter",
            "AccessDeniedException".into(),
            String::new(),
        );
        assert!(matches!(
            ssm,
            AwsError::Denied {
                action: "ssm:GetParameter",
                ..
            }
        ));
    }

    #[test]
    fn throttling_is_recognised_for_both_services() {
        for code in ["RequestLimitExceeded", "ThrottlingException"] {
            let err = from_code("ec2:DescribeAddresses", code.into(), String::new());
            assert!(matches!(err, AwsError::Throttled { .. }), "{code}");
            assert!(err.to_string().contains("backoff"));
        }
        let other = from_code("ec2:CreateRoute", "RouteAlreadyExists".into(), "x".into());
        assert_eq!(other.code(), Some("RouteAlreadyExists"));
    }
}
