//! The devices page's SSH certificate form (`ssh.certificates`): the member
//! pastes one of their public keys (a new one becomes theirs), and gets the
//! certificate with the file to save it as, beside the private key, and the
//! `ssh_config` lines that use it. The rules are the access service's
//! (`access::certs`), as for `POST /api/v1/ssh/certificates`.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_config::api::IssuedCert;
use maud::html;
use serde::Deserialize;

use super::PortalState;
use super::error::Failure;
use super::flows;
use super::pages::{checked_form, layout, message_page, page};
use super::sessions::{ClientAddr, Session};
use crate::time_fmt::rfc3339;

/// The form: one OpenSSH public key line.
#[derive(Debug, Deserialize)]
pub struct CertForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
}

/// `POST /ssh-keys/certificate`.
pub async fn certificate_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Form<CertForm>, FormRejection>,
) -> Response {
    let refused = "No certificate";
    let (session, form) = match checked_form(session, form, |f| &f.csrf, refused) {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let by = flows::requester(source, &session);
    match state
        .access
        .issue_certificate(&by, &session.user.name, form.public_key.trim(), None)
        .await
    {
        Ok(issued) => issued_page(&session, &issued, form.public_key.trim()),
        Err(err) => {
            let error = Failure::from(err);
            message_page(error.status, refused, &error.message)
        }
    }
}

/// The file OpenSSH looks for beside the private key of `public_key`'s type.
pub fn cert_file_name(public_key: &str) -> &'static str {
    match public_key.split_whitespace().next().unwrap_or_default() {
        "ssh-rsa" => "id_rsa-cert.pub",
        kind if kind.starts_with("ecdsa-") => "id_ecdsa-cert.pub",
        _ => "id_ed25519-cert.pub",
    }
}

fn issued_page(session: &Session, issued: &IssuedCert, public_key: &str) -> Response {
    let file = cert_file_name(public_key);
    let key_file = file.trim_end_matches("-cert.pub");
    let download = format!(
        "data:text/plain;base64,{}",
        STANDARD.encode(format!("{}\n", issued.certificate))
    );
    let config_lines = format!(
        "# in the gatehouse Host blocks of ~/.ssh/config (see the ssh_config snippet)\n    \
         IdentityFile ~/.ssh/{key_file}\n    CertificateFile ~/.ssh/{file}\n"
    );
    page(
        StatusCode::OK,
        layout(
            "Your SSH certificate",
            Some((&session.user.name, &session.csrf)),
            html! {
                h1 { "Your SSH certificate" }
                p {
                    "Valid for " strong { (issued.principals.join(", ")) }
                    " until " strong { (rfc3339(issued.valid_before)) } " (serial " (issued.serial) ")."
                }
                p { "Save it as " code { "~/.ssh/" (file) } ", beside your private key " code { "~/.ssh/" (key_file) } ": ssh then offers it by itself, to the jump host and to the private hosts." }
                p { a #cert-download .button href=(download) download=(file) { "Download " (file) } }
                pre #cert-text { (issued.certificate) }
                p { "If your key lives elsewhere, these ssh_config lines name both files:" }
                pre #cert-config { (config_lines) }
                p .hint { "It works only through the gateway (from its addresses and the VPN): " code { (issued.source_address) } ". Get a new one when it expires." }
                p { a href="/devices" { "Back to your devices" } }
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_file_is_named_as_openssh_looks_for_it() {
        assert_eq!(cert_file_name("ssh-ed25519 AAAA x"), "id_ed25519-cert.pub");
        assert_eq!(
            cert_file_name("ecdsa-sha2-nistp256 AAAA"),
            "id_ecdsa-cert.pub"
        );
        assert_eq!(cert_file_name("ssh-rsa AAAA"), "id_rsa-cert.pub");
    }
}
