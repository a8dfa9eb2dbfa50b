//! Writes of one resource: `PATCH` with `If-Match` and one re-read on 412, `GET` + `PUT` for
//! servers without PATCH, `active`, and `DELETE` (404: already gone).

use serde_json::Value;

use super::{Kind, ScimConnector, not_found, op_error, wire};
use crate::connector::api::{OpError, StatusAction, StatusItem};
use crate::connector::http::Method;

impl ScimConnector {
    /// `PATCH /{kind}/{id}` with `ops`. With ETags and `if_match`: `If-Match` with the version
    /// last seen (read first when unknown); a 412 (or 428) re-reads it once and sends again.
    /// Without `if_match` a 428 is the error (`Rejected` 428) for the caller to handle.
    pub(super) async fn patch(
        &self,
        kind: Kind,
        id: &str,
        ops: Vec<Value>,
        if_match: bool,
    ) -> Result<(), OpError> {
        let etag = self.features().await?.etag;
        let body = wire::patch_body(ops);
        let mut version = match (etag && if_match, self.cached_version(kind, id)) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => self.fresh_version(kind, id).await?,
        };
        let what = format!("PATCH {} {id}", kind.as_str());
        for attempt in 0..2 {
            let mut req = self
                .request_json(
                    Method::PATCH,
                    self.url(kind.as_str(), Some(id))?,
                    body.clone(),
                )
                // Replacing values and adding / removing members is idempotent.
                .idempotent(true);
            if let Some(v) = &version {
                req = req.header("If-Match", v.clone());
            }
            match self.http.send(req).await {
                Ok(resp) => {
                    self.remember_version(kind, id, wire::version(&resp));
                    return Ok(());
                }
                Err(e)
                    if attempt == 0
                        && etag
                        && if_match
                        && matches!(e.status(), Some(412 | 428)) =>
                {
                    tracing::info!(target = %self.http.target(), remote_id = %id, status = e.status().unwrap_or(0),
                        "the resource's version changed (or is required): reading it again");
                    version = self.fresh_version(kind, id).await?;
                }
                Err(e) => return Err(op_error(e, &what)),
            }
        }
        Err(OpError::Unavailable {
            message: format!("{what}: the resource kept changing (HTTP 412 twice)"),
        })
    }

    /// `GET` + `PUT` of a user with `edit` applied to the resource as read (servers without
    /// PATCH); with ETags, `If-Match`, and a 412 reads and edits once more.
    pub(super) async fn put_user(
        &self,
        id: &str,
        edit: &(dyn Fn(&Value) -> Value + Sync),
    ) -> Result<(), OpError> {
        let etag = self.features().await?.etag;
        let what = format!("PUT Users {id}");
        for attempt in 0..2 {
            let current = self
                .read(Kind::Users, id)
                .await?
                .ok_or_else(|| not_found(Kind::Users, id))?;
            let mut req =
                self.request_json(Method::PUT, self.url("Users", Some(id))?, edit(&current));
            if etag && let Some(v) = self.cached_version(Kind::Users, id) {
                req = req.header("If-Match", v);
            }
            match self.http.send(req).await {
                Ok(resp) => {
                    self.remember_version(Kind::Users, id, wire::version(&resp));
                    return Ok(());
                }
                Err(e) if attempt == 0 && e.status() == Some(412) => continue,
                Err(e) => return Err(op_error(e, &what)),
            }
        }
        Err(OpError::Unavailable {
            message: format!("{what}: the resource kept changing (HTTP 412 twice)"),
        })
    }

    /// Sets `active` on one user.
    async fn set_active(&self, id: &str, active: bool) -> Result<(), OpError> {
        if self.features().await?.patch {
            let op = serde_json::json!({ "op": "replace", "path": "active", "value": active });
            self.patch(Kind::Users, id, vec![op], true).await
        } else {
            self.put_user(id, &|cur: &Value| {
                let mut m = cur.as_object().cloned().unwrap_or_default();
                m.remove("meta");
                m.insert("active".into(), Value::Bool(active));
                Value::Object(m)
            })
            .await
        }
    }

    /// `DELETE /Users/{id}`; 404 is a success (already gone). With ETags, a 412 / 428 reads
    /// the version and sends once more with `If-Match`.
    async fn delete_user(&self, id: &str) -> Result<(), OpError> {
        let mut version = None;
        for attempt in 0..2 {
            let mut req = self.request(Method::DELETE, self.url("Users", Some(id))?);
            if let Some(v) = &version {
                req = req.header("If-Match", String::clone(v));
            }
            match self.http.send(req).await {
                Ok(_) => {
                    self.remember_version(Kind::Users, id, None);
                    return Ok(());
                }
                Err(e) if e.status() == Some(404) => {
                    tracing::info!(target = %self.http.target(), remote_id = %id, "delete: the account was already gone");
                    self.remember_version(Kind::Users, id, None);
                    return Ok(());
                }
                Err(e) if attempt == 0 && matches!(e.status(), Some(412 | 428)) => {
                    match self.read(Kind::Users, id).await? {
                        Some(_) => version = self.cached_version(Kind::Users, id),
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(op_error(e, &format!("DELETE Users {id}"))),
            }
        }
        Err(OpError::Unavailable {
            message: format!("DELETE Users {id}: the resource kept changing (HTTP 412 twice)"),
        })
    }

    pub(super) async fn status_one(
        &self,
        action: StatusAction,
        item: &StatusItem,
    ) -> Result<(), OpError> {
        match action {
            StatusAction::Delete => self.delete_user(&item.remote_id).await,
            StatusAction::Enable => self.set_active(&item.remote_id, true).await,
            StatusAction::Disable => self.set_active(&item.remote_id, false).await,
        }
    }
}
