//! etcd's auth on a replica: the permission rules, tokens and passwords.
//! The state itself (users, roles, the enabled flag) lives in the store and
//! changes only through the log (`store::apply::auth`).

pub(crate) mod password;
pub(crate) mod rules;
pub(crate) mod token;
