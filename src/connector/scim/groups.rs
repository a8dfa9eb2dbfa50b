//! Roles as SCIM Groups: each group found by `filter=displayName eq "..."` once per run
//! (cached; created when `create_groups`), membership changed by `PATCH /Groups/{id}` with
//! `add` / `remove` of `members` — only the delta, never the whole member list. Without PATCH:
//! the group read and `PUT` back with the member added or removed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::{Kind, ScimConnector, filter, op_error, wire};
use crate::connector::api::OpError;
use crate::connector::http::Method;

/// displayName (lower case) → the group's id (`None`: not on the server); whether the server
/// demands `If-Match` on group writes, and then one lock per group (its writes one at a time,
/// each with the version the previous one returned, so concurrent deltas never race into 412s).
#[derive(Default)]
pub(super) struct GroupCache {
    ids: tokio::sync::Mutex<HashMap<String, Option<String>>>,
    need_etag: AtomicBool,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GroupCache {
    fn lock_of(&self, gid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(gid.to_string()).or_default().clone()
    }
}

fn display_name(g: &Value) -> Option<&str> {
    g.get("displayName").and_then(Value::as_str)
}

fn id_of(g: &Value) -> Option<String> {
    match g.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl ScimConnector {
    /// The group named `name` on the server (one request; without filter support, a listing).
    async fn lookup_group(&self, name: &str, members: bool) -> Result<Option<Value>, OpError> {
        let found = if self.features().await?.filter {
            let extra: &[(&str, &str)] = if members {
                &[]
            } else {
                &[("excludedAttributes", "members")]
            };
            self.filtered("Groups", &filter::eq("displayName", name), extra)
                .await?
        } else {
            self.list_all("Groups", &[]).await?
        };
        Ok(found
            .into_iter()
            .find(|g| display_name(g).is_some_and(|d| d.to_lowercase() == name.to_lowercase())))
    }

    /// The id of the group `name` when it exists (cached for the run).
    pub(super) async fn find_group_id(&self, name: &str) -> Result<Option<String>, OpError> {
        let mut ids = self.groups.ids.lock().await;
        let key = name.to_lowercase();
        if let Some(known) = ids.get(&key) {
            return Ok(known.clone());
        }
        let g = self.lookup_group(name, false).await?;
        let id = g.as_ref().and_then(id_of);
        if let (Some(g), Some(id)) = (&g, &id) {
            self.remember_version(Kind::Groups, id, wire::body_version(g));
        }
        ids.insert(key, id.clone());
        Ok(id)
    }

    /// The id of the group `name`; a missing one is created when `create_groups` (and
    /// `create` is asked), else the error says so.
    pub(super) async fn group_id(&self, name: &str, create: bool) -> Result<String, OpError> {
        if let Some(id) = self.find_group_id(name).await? {
            return Ok(id);
        }
        if !(create && self.create_groups) {
            return Err(OpError::Unsupported {
                message: format!(
                    "the group {name:?} does not exist on the target (create it, or set \
                     create_groups = true)"
                ),
            });
        }
        let mut ids = self.groups.ids.lock().await;
        let key = name.to_lowercase();
        if let Some(Some(id)) = ids.get(&key) {
            return Ok(id.clone());
        }
        let body = json!({ "schemas": [wire::GROUP_SCHEMA], "displayName": name });
        let req = self.request_json(Method::POST, self.url("Groups", None)?, body);
        let id = match self.http.send(req).await {
            Ok(resp) => {
                let g: Value = resp.json()?;
                let id = id_of(&g).ok_or_else(|| {
                    OpError::from(resp.decode_error(format!("the new group {name:?} has no id")))
                })?;
                self.remember_version(Kind::Groups, &id, wire::version(&resp));
                tracing::info!(target = %self.http.target(), group = %name, remote_id = %id, "group created");
                id
            }
            // Created meanwhile by someone else.
            Err(e) if e.status() == Some(409) => self
                .lookup_group(name, false)
                .await?
                .as_ref()
                .and_then(id_of)
                .ok_or_else(|| op_error(e, &format!("creating the group {name:?}")))?,
            Err(e) => return Err(op_error(e, &format!("creating the group {name:?}"))),
        };
        ids.insert(key, Some(id.clone()));
        Ok(id)
    }

    /// Adds `user` to (or removes it from) the group `gid`.
    pub(super) async fn membership(&self, gid: &str, user: &str, add: bool) -> Result<(), OpError> {
        if self.features().await?.patch {
            let op = if add {
                json!({ "op": "add", "path": "members", "value": [{ "value": user }] })
            } else {
                json!({ "op": "remove", "path": format!("members[value eq {}]", filter::quote(user)) })
            };
            // Membership deltas commute: no If-Match unless the server demands it (428).
            if !self.groups.need_etag.load(Ordering::Relaxed) {
                match self.patch(Kind::Groups, gid, vec![op.clone()], false).await {
                    Err(OpError::Rejected { status: 428, .. }) => {
                        tracing::info!(target = %self.http.target(), group_id = %gid,
                            "the server requires If-Match on groups: their writes go one at a time");
                        self.groups.need_etag.store(true, Ordering::Relaxed);
                    }
                    other => return other,
                }
            }
            let lock = self.groups.lock_of(gid);
            let _one_at_a_time = lock.lock().await;
            return self.patch(Kind::Groups, gid, vec![op], true).await;
        }
        // No PATCH: the whole group, read and written back.
        let etag = self.features().await?.etag;
        let what = format!("PUT Groups {gid}");
        for attempt in 0..2 {
            let req = self.request(Method::GET, self.url("Groups", Some(gid))?);
            let resp = self.send(req, &format!("reading Groups {gid}")).await?;
            let mut g: Value = resp.json()?;
            let version = wire::version(&resp);
            let mut members: Vec<Value> = g
                .get("members")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let is_user = |m: &Value| m.get("value").and_then(Value::as_str) == Some(user);
            let present = members.iter().any(is_user);
            if present == add {
                return Ok(());
            }
            if add {
                members.push(json!({ "value": user }));
            } else {
                members.retain(|m| !is_user(m));
            }
            if let Some(m) = g.as_object_mut() {
                m.remove("meta");
                m.insert("members".into(), Value::Array(members));
            }
            let mut req = self.request_json(Method::PUT, self.url("Groups", Some(gid))?, g);
            if etag && let Some(v) = version {
                req = req.header("If-Match", v);
            }
            match self.http.send(req).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && e.status() == Some(412) => continue,
                Err(e) => return Err(op_error(e, &what)),
            }
        }
        Err(OpError::Unavailable {
            message: format!("{what}: the group kept changing (HTTP 412 twice)"),
        })
    }

    /// User id → the managed groups (roles) it is a member of (listing, drift).
    pub(super) async fn managed_members(
        &self,
    ) -> Result<HashMap<String, BTreeSet<String>>, OpError> {
        let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
        for role in &self.managed_roles {
            let Some(g) = self.lookup_group(role, true).await? else {
                continue;
            };
            let members = g.get("members").and_then(Value::as_array);
            for m in members.into_iter().flatten() {
                if let Some(uid) = m.get("value").and_then(Value::as_str) {
                    out.entry(uid.to_string()).or_default().insert(role.clone());
                }
            }
        }
        Ok(out)
    }
}
