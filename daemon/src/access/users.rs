//! Users and their SSH keys: creation with its enrollment link, state and
//! group changes, removal, keys, and a user's detail with their VPN access
//! state — as `accessctl user show` and the portal's whoami both report it.
//! Its refusals are [`super::user_error::UserError`].

use gatehouse_config::Config;
use gatehouse_config::api::{
    Enrollment, SshKeyInfo, SsoIdentityInfo, UserDetail, UserState, UserSummary, VpnAccessState,
};
use gatehouse_config::names::is_valid_name;
use rand_core::{OsRng, RngCore};
use serde_json::json;

use super::devices::device_info;
use super::user_error::MAX_OIDC_SUBJECT;
use super::user_error::UserError;
use super::{Access, Requester};
use crate::audit::event::{Kind, event};
use crate::ssh_keys::parse_public_key;
use crate::store::{Device, NewUser, SshKey, StoreError, User, hash_token};
use crate::time_fmt::{now_unix, rfc3339, rfc3339_opt};
use crate::vpn::session::VpnAccess;

/// What a member may reach now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAccess {
    /// The union of their groups' subnets (the devices' AllowedIPs).
    pub subnets: Vec<String>,
    /// Whether their devices are peers now, and why.
    pub vpn: VpnAccessState,
    /// When VPN access from the last login ends (a login session only).
    pub vpn_until: Option<i64>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub name: String,
    pub groups: Vec<String>,
    /// OpenSSH public key lines.
    pub ssh_keys: Vec<String>,
    pub expires_in_secs: Option<u64>,
    pub no_login: bool,
    /// Link to this subject at the `[oidc]` provider (no enrollment link:
    /// they sign in with SSO, which activates them).
    pub oidc_subject: Option<String>,
}

impl Access {
    /// Creates a user with their keys: a person is pending, with a one-time
    /// enrollment link (only its hash is stored); a machine (`no_login`)
    /// never enrolls, so it is active at once and gets no link.
    pub async fn create_user(
        &self,
        by: &Requester,
        new: NewMember,
    ) -> Result<(UserDetail, Option<Enrollment>), UserError> {
        let config = self.core.config();
        if !is_valid_name(&new.name) {
            return Err(UserError::InvalidName { name: new.name });
        }
        let groups = checked_groups(&config, new.groups)?;
        let keys = new
            .ssh_keys
            .iter()
            .map(|line| parse_public_key(line).map_err(UserError::SshKey))
            .collect::<Result<Vec<_>, _>>()?;
        let now = now_unix();
        let expires_at = match new.expires_in_secs {
            Some(0) => {
                return Err(UserError::ExpiryNotInFuture);
            }
            Some(secs) => {
                let at = now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
                if at > crate::time_fmt::MAX_UNIX {
                    return Err(UserError::ExpiryTooLate);
                }
                Some(at)
            }
            None => None,
        };
        let sso = match (new.oidc_subject.as_deref().map(str::trim), &config.oidc) {
            (None, _) => None,
            (Some(""), _) => {
                return Err(UserError::OidcSubjectEmpty);
            }
            (Some(subject), Some(oidc)) if subject.len() <= MAX_OIDC_SUBJECT => {
                Some((oidc.issuer.clone(), subject.to_string()))
            }
            (Some(_), Some(_)) => {
                return Err(UserError::OidcSubjectTooLong);
            }
            (Some(_), None) => {
                return Err(UserError::OidcNotConfigured);
            }
        };
        if sso.is_some() && new.no_login {
            return Err(UserError::MachineWithSso);
        }
        let link = (!new.no_login && sso.is_none()).then(|| NewLink::new(&config, now));
        let state = if new.no_login {
            UserState::Active
        } else {
            UserState::Pending
        };
        let audit = event(Kind::UserAdd, by.actor.clone(), by.source.clone())
            .on(new.name.clone())
            .detail(json!({
                "groups": groups,
                "ssh_keys": keys.iter().map(|k| k.fingerprint.clone()).collect::<Vec<_>>(),
                "expires_at": rfc3339_opt(expires_at),
                "no_login": new.no_login,
                "state": state.as_str(),
                "enrollment_expires_at": link.as_ref().map(|l| rfc3339(l.expires_at)),
                "oidc_subject": sso.as_ref().map(|(_, subject)| subject),
            }));
        let row = NewUser {
            name: new.name.clone(),
            groups,
            created_at: now,
            expires_at,
            no_login: new.no_login,
        };
        let name = new.name.clone();
        let stored = link.as_ref().map(|l| (l.hash.clone(), l.expires_at));
        self.core
            .store()
            .write(move |w| {
                w.create_user(row)?;
                if state != UserState::Pending {
                    w.set_user_state(&name, state)?;
                }
                for mut key in keys {
                    key.added_at = now;
                    w.add_ssh_key(&name, key)?;
                }
                if let Some((hash, expires_at)) = stored {
                    w.create_enrollment_token(&name, &hash, now, expires_at)?;
                }
                if let Some((issuer, subject)) = &sso {
                    w.link_sso_identity(&name, issuer, subject, now)?;
                }
                w.audit(audit)?;
                Ok(())
            })
            .await?;
        let enrollment = link.map(|l| self.enrollment(l));
        Ok((self.user_detail(&new.name).await?, enrollment))
    }

    /// A new one-time enrollment link for a pending person (their older
    /// unused links stop working): for a link that expired or was lost.
    pub async fn new_enrollment_link(
        &self,
        by: &Requester,
        name: &str,
    ) -> Result<Enrollment, UserError> {
        let now = now_unix();
        let link = NewLink::new(&self.core.config(), now);
        let audit = event(
            Kind::UserEnrollmentLink,
            by.actor.clone(),
            by.source.clone(),
        )
        .on(name)
        .detail(json!({ "enrollment_expires_at": rfc3339(link.expires_at) }));
        let (target, hash, expires_at) = (name.to_string(), link.hash.clone(), link.expires_at);
        self.core
            .store()
            .write(move |w| {
                let user = w.existing_user(&target)?;
                if let Some(why) = no_enrollment_for(&user) {
                    return Ok(Err(why));
                }
                w.create_enrollment_token(&target, &hash, now, expires_at)?;
                w.audit(audit)?;
                Ok(Ok(()))
            })
            .await??;
        Ok(self.enrollment(link))
    }

    fn enrollment(&self, link: NewLink) -> Enrollment {
        Enrollment {
            url: self.enrollment_url(&link.token),
            token: link.token,
            expires_at: rfc3339(link.expires_at),
        }
    }

    /// Every user, with counts of their devices and keys.
    pub async fn users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let now = now_unix();
        let (users, devices, keys) = self
            .core
            .store()
            .read(|r| Ok((r.users()?, r.devices(None)?, r.all_ssh_keys()?)))
            .await?;
        Ok(users
            .into_iter()
            .map(|u| UserSummary {
                devices: devices.iter().filter(|d| d.user == u.name).count() as u64,
                ssh_keys: keys.iter().filter(|(owner, _)| *owner == u.name).count() as u64,
                state: u.state,
                expired: u.is_expired(now),
                expires_at: rfc3339_opt(u.expires_at),
                last_seen: rfc3339_opt(u.last_seen),
                groups: u.groups,
                name: u.name,
            })
            .collect())
    }

    /// Everything `user show` prints, with live device fields.
    pub async fn user_detail(&self, name: &str) -> Result<UserDetail, StoreError> {
        let name = name.to_string();
        let (user, keys, devices, sso) = self
            .core
            .store()
            .read(move |r| {
                let user = r.user(&name)?.ok_or_else(|| not_found_user(&name))?;
                let keys = r.ssh_keys(&name)?;
                let devices = r.devices(Some(&name))?;
                let sso = r.sso_identity_of(&name)?;
                Ok((user, keys, devices, sso))
            })
            .await?;
        let mut detail = user_detail(&self.core.config(), user, &keys, &devices, now_unix());
        detail.sso = sso.map(|link| SsoIdentityInfo {
            issuer: link.issuer,
            subject: link.subject,
            linked_at: rfc3339(link.linked_at),
        });
        let live = self.live_peers();
        detail.devices = detail.devices.into_iter().map(|d| live.merge(d)).collect();
        Ok(detail)
    }

    /// What `user` may reach now, as their own pages show it.
    pub fn member_access(&self, user: &User, now: i64) -> MemberAccess {
        let config = self.core.config();
        let (vpn, vpn_until) = vpn_access(user, &config, now);
        MemberAccess {
            subnets: subnets_of(&config, &user.groups),
            vpn,
            vpn_until,
        }
    }

    /// Enables or disables `name`.
    pub async fn set_user_state(
        &self,
        by: &Requester,
        name: &str,
        state: UserState,
    ) -> Result<UserDetail, StoreError> {
        let kind = match state {
            UserState::Disabled => Kind::UserDisable,
            UserState::Active | UserState::Pending => Kind::UserEnable,
        };
        let audit = event(kind, by.actor.clone(), by.source.clone())
            .on(name)
            .detail(json!({}));
        let target = name.to_string();
        self.core
            .store()
            .write(move |w| {
                w.set_user_state(&target, state)?;
                w.audit(audit)?;
                Ok(())
            })
            .await?;
        self.user_detail(name).await
    }

    /// Removes `name` with their devices and keys; answers what was removed.
    pub async fn remove_user(&self, by: &Requester, name: &str) -> Result<UserDetail, StoreError> {
        let before = self.user_detail(name).await?;
        let audit = event(Kind::UserRemove, by.actor.clone(), by.source.clone())
            .on(name)
            .detail(json!({ "groups": before.groups, "devices": before.devices.len() }));
        let target = name.to_string();
        self.core
            .store()
            .write(move |w| {
                w.delete_user(&target)?;
                w.audit(audit)?;
                Ok(())
            })
            .await?;
        Ok(before)
    }

    /// Replaces `name`'s groups.
    pub async fn set_user_groups(
        &self,
        by: &Requester,
        name: &str,
        groups: Vec<String>,
    ) -> Result<UserDetail, UserError> {
        let groups = checked_groups(&self.core.config(), groups)?;
        let audit = event(Kind::UserSetGroups, by.actor.clone(), by.source.clone()).on(name);
        let target = name.to_string();
        self.core
            .store()
            .write(move |w| {
                let before = w.user(&target)?.ok_or_else(|| not_found_user(&target))?;
                w.set_user_groups(&target, groups.clone())?;
                w.audit(audit.detail(json!({ "from": before.groups, "to": groups })))?;
                Ok(())
            })
            .await?;
        Ok(self.user_detail(name).await?)
    }

    /// Marks `name` as a machine that never logs in to the portal (or not),
    /// and keeps the state saying what it means: a machine is never pending
    /// (it does not enroll; its unused links are deleted), and a person who
    /// never enrolled is pending until they do.
    pub async fn set_no_login(
        &self,
        by: &Requester,
        name: &str,
        no_login: bool,
    ) -> Result<UserDetail, StoreError> {
        let (target, actor, source) = (name.to_string(), by.actor.clone(), by.source.clone());
        self.core
            .store()
            .write(move |w| {
                let user = w.existing_user(&target)?;
                let enrolled = user.password_hash.is_some();
                let state = match (no_login, user.state, enrolled) {
                    (true, UserState::Pending, _) => UserState::Active,
                    (false, UserState::Active, false) => UserState::Pending,
                    (_, unchanged, _) => unchanged,
                };
                w.set_no_login(&target, no_login)?;
                if state != user.state {
                    w.set_user_state(&target, state)?;
                }
                if no_login {
                    w.delete_enrollment_tokens(&target)?;
                }
                w.audit(
                    event(Kind::UserSetNoLogin, actor, source)
                        .on(target.clone())
                        .detail(json!({ "no_login": no_login, "state": state.as_str() })),
                )?;
                Ok(())
            })
            .await?;
        self.user_detail(name).await
    }

    /// Registers an SSH public key (one OpenSSH line) for `name`.
    pub async fn add_ssh_key(
        &self,
        by: &Requester,
        name: &str,
        line: &str,
    ) -> Result<SshKeyInfo, UserError> {
        let mut key = parse_public_key(line).map_err(UserError::SshKey)?;
        key.added_at = now_unix();
        let info = key_info(&key);
        let audit = event(Kind::UserKeyAdd, by.actor.clone(), by.source.clone())
            .on(name)
            .detail(json!({ "fingerprint": key.fingerprint, "algorithm": key.algorithm, "via": by.door.as_str() }));
        let target = name.to_string();
        self.core
            .store()
            .write(move |w| {
                w.add_ssh_key(&target, key)?;
                w.audit(audit)?;
                Ok(())
            })
            .await?;
        Ok(info)
    }

    /// Removes `name`'s key with `fingerprint`.
    pub async fn remove_ssh_key(
        &self,
        by: &Requester,
        name: &str,
        fingerprint: &str,
    ) -> Result<SshKeyInfo, StoreError> {
        let audit = event(Kind::UserKeyRemove, by.actor.clone(), by.source.clone())
            .on(name)
            .detail(json!({ "fingerprint": fingerprint, "via": by.door.as_str() }));
        let (target, fingerprint) = (name.to_string(), fingerprint.to_string());
        let removed = self
            .core
            .store()
            .write(move |w| {
                let key = w.remove_ssh_key(&target, &fingerprint)?;
                w.audit(audit)?;
                Ok(key)
            })
            .await?;
        Ok(key_info(&removed))
    }
}

/// A user's detail from their rows (live device fields unset).
fn user_detail(
    config: &Config,
    user: User,
    keys: &[SshKey],
    devices: &[Device],
    now: i64,
) -> UserDetail {
    let subnets = subnets_of(config, &user.groups);
    let (vpn_access, vpn_access_until) = vpn_access(&user, config, now);
    UserDetail {
        expired: user.is_expired(now),
        no_login: user.no_login,
        vpn_access,
        vpn_access_until: rfc3339_opt(vpn_access_until),
        state: user.state,
        subnets,
        created_at: rfc3339(user.created_at),
        expires_at: rfc3339_opt(user.expires_at),
        last_seen: rfc3339_opt(user.last_seen),
        ssh_keys: keys.iter().map(key_info).collect(),
        devices: devices.iter().map(device_info).collect(),
        groups: user.groups,
        name: user.name,
        sso: None,
    }
}

/// The subnets members of `groups` may reach.
fn subnets_of(config: &Config, groups: &[String]) -> Vec<String> {
    config
        .policy()
        .access_for(groups)
        .subnets()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The VPN access state of `user` now, and when a login session ends.
fn vpn_access(user: &User, config: &Config, now: i64) -> (VpnAccessState, Option<i64>) {
    let access = VpnAccess::of(user, &config.vpn, now);
    let state = match access {
        VpnAccess::Always => VpnAccessState::Always,
        VpnAccess::Until(end) if now < end => VpnAccessState::Session,
        VpnAccess::Until(_) | VpnAccess::LoginNeeded => VpnAccessState::LoginNeeded,
        VpnAccess::Refused => VpnAccessState::Refused,
    };
    (state, access.ends_at().filter(|end| now < *end))
}

fn not_found_user(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "user",
        name: name.to_string(),
    }
}

/// Sorted, deduplicated, and every one defined in the running config.
fn checked_groups(config: &Config, mut groups: Vec<String>) -> Result<Vec<String>, UserError> {
    if groups.is_empty() {
        return Err(UserError::NoGroups);
    }
    groups.sort();
    groups.dedup();
    let unknown: Vec<String> = groups
        .iter()
        .filter(|g| config.group(g).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(UserError::UnknownGroups {
            unknown,
            defined: config.groups.iter().map(|g| g.name.clone()).collect(),
        });
    }
    Ok(groups)
}

fn key_info(key: &SshKey) -> SshKeyInfo {
    SshKeyInfo {
        fingerprint: key.fingerprint.clone(),
        algorithm: key.algorithm.clone(),
        comment: key.comment.clone(),
        added_at: rfc3339(key.added_at),
    }
}

/// A fresh enrollment token: 32 random bytes, URL-safe. Shown once; only its
/// hash is stored.
fn new_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh enrollment link: the token shown once, its hash stored.
struct NewLink {
    token: String,
    hash: String,
    expires_at: i64,
}

impl NewLink {
    fn new(config: &Config, now: i64) -> Self {
        let token = new_token();
        NewLink {
            hash: hash_token(&token),
            token,
            expires_at: now.saturating_add(
                i64::try_from(config.portal.enrollment_ttl.as_secs()).unwrap_or(i64::MAX),
            ),
        }
    }
}

/// Why `user` gets no new enrollment link, if it does not: a pending
/// member gets one, and so does any active one without an authenticator
/// app (as a member who signed in with SSO before `oidc.require_totp`:
/// under `oidc.totp_enrollment = "admin_link"` the link is their only way
/// to one). Enrolling with it sets a new password too, as for anyone.
fn no_enrollment_for(user: &User) -> Option<UserError> {
    let active_without_app = user.state == UserState::Active && user.totp_secret.is_none();
    if user.no_login {
        Some(UserError::MachineNeverEnrolls {
            name: user.name.clone(),
        })
    } else if user.state != UserState::Pending && !active_without_app {
        Some(UserError::NotPending {
            name: user.name.clone(),
            state: user.state,
        })
    } else {
        None
    }
}
