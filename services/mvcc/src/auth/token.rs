//! Auth tokens every replica can check without asking another: the user,
//! the auth revision it was issued at and its expiry, signed with the key
//! the cluster drew when auth was first enabled (it lives in the auth state,
//! so it survives restarts and reaches every replica through the log).
//!
//! A token is refused once expired, once its user is gone, and once the
//! user's password changed after it was issued.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cairn_proto::cairn::mvcc::v1::{AuthState, AuthToken};
use cairn_proto::etcd_error::EtcdError;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use super::rules;

type Signer = Hmac<Sha256>;

fn signer(key: &[u8]) -> Result<Signer, EtcdError> {
    Signer::new_from_slice(key).map_err(|_| EtcdError::InvalidAuthToken)
}

/// A token for `user`, valid until `expires_unix_ms`.
pub(crate) fn issue(
    state: &AuthState,
    user: &str,
    expires_unix_ms: i64,
) -> Result<String, EtcdError> {
    let payload = AuthToken {
        user: user.to_owned(),
        revision: state.revision,
        expires_unix_ms,
    }
    .encode_to_vec();
    let mut mac = signer(&state.signing_key)?;
    mac.update(&payload);
    let signature = mac.finalize().into_bytes();
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The user a token names, if `state` still accepts it at `now_unix_ms`;
/// anything else is etcd's "invalid auth token".
pub(crate) fn verify(
    state: &AuthState,
    token: &str,
    now_unix_ms: i64,
) -> Result<String, EtcdError> {
    let invalid = EtcdError::InvalidAuthToken;
    let (payload, signature) = token.split_once('.').ok_or(invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid)?;
    let mut mac = signer(&state.signing_key)?;
    mac.update(&payload);
    mac.verify_slice(&signature).map_err(|_| invalid)?;
    let token = AuthToken::decode(payload.as_slice()).map_err(|_| invalid)?;
    if token.expires_unix_ms <= now_unix_ms {
        return Err(invalid);
    }
    let user = rules::user(state, &token.user).ok_or(invalid)?;
    if user.since_revision > token.revision {
        return Err(invalid);
    }
    Ok(token.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::authpb::User;
    use cairn_proto::cairn::mvcc::v1::AuthUser;

    fn state() -> AuthState {
        AuthState {
            enabled: true,
            revision: 5,
            signing_key: vec![7; 32],
            users: vec![AuthUser {
                user: Some(User {
                    name: b"alice".to_vec(),
                    ..Default::default()
                }),
                since_revision: 3,
            }],
            roles: vec![],
        }
    }

    #[test]
    fn a_token_names_its_user_until_it_expires() {
        let auth = state();
        let token = issue(&auth, "alice", 2_000).expect("the test's own input");
        assert_eq!(verify(&auth, &token, 1_999), Ok("alice".to_owned()));
        assert_eq!(
            verify(&auth, &token, 2_000),
            Err(EtcdError::InvalidAuthToken)
        );
    }

    #[test]
    fn forged_truncated_or_foreign_tokens_are_invalid() {
        let auth = state();
        let token = issue(&auth, "alice", 2_000).expect("the test's own input");
        let (payload, signature) = token.split_once('.').expect("the test's own input");
        let mut forged_payload = AuthToken::decode(
            URL_SAFE_NO_PAD
                .decode(payload)
                .expect("the test's own input")
                .as_slice(),
        )
        .expect("the test's own input");
        forged_payload.user = "root".into();
        let forged = format!(
            "{}.{signature}",
            URL_SAFE_NO_PAD.encode(forged_payload.encode_to_vec())
        );
        let mut other = state();
        other.signing_key = vec![8; 32];
        let foreign = issue(&other, "alice", 2_000).expect("the test's own input");
        for bad in [
            forged.as_str(),
            &token[..token.len() - 3],
            payload,
            "",
            "simple.42",
            foreign.as_str(),
        ] {
            assert_eq!(
                verify(&auth, bad, 1_000),
                Err(EtcdError::InvalidAuthToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_from_before_a_password_change_or_for_a_deleted_user_is_invalid() {
        let mut auth = state();
        let token = issue(&auth, "alice", 2_000).expect("the test's own input");
        auth.revision = 6;
        auth.users[0].since_revision = 6;
        assert_eq!(
            verify(&auth, &token, 1_000),
            Err(EtcdError::InvalidAuthToken)
        );
        let fresh = issue(&auth, "alice", 2_000).expect("the test's own input");
        assert_eq!(verify(&auth, &fresh, 1_000), Ok("alice".to_owned()));
        auth.users.clear();
        assert_eq!(
            verify(&auth, &fresh, 1_000),
            Err(EtcdError::InvalidAuthToken)
        );
    }
}
