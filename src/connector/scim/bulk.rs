//! Enable / disable / delete through `POST /Bulk` (RFC 7644 section 3.7) when the server
//! advertises it: at most `maxOperations` per request and requests under `maxPayloadSize`
//! bytes. Each operation has a `bulkId`; results are matched by it (else by position).

use serde_json::{Value, json};

use super::discovery::BulkLimits;
use super::{ScimConnector, op_error, wire};
use crate::connector::api::{OpError, StatusAction, StatusItem};
use crate::connector::http::{Method, path_segment};

/// Bytes of a Bulk request around its operations.
const ENVELOPE: usize = 128;

/// One Bulk operation of `action` on `item` (`bulkId` `n`).
pub(super) fn operation(action: StatusAction, item: &StatusItem, n: usize) -> Value {
    let path = format!("/Users/{}", path_segment(&item.remote_id));
    match action {
        StatusAction::Delete => {
            json!({ "method": "DELETE", "path": path, "bulkId": n.to_string() })
        }
        StatusAction::Enable | StatusAction::Disable => json!({
            "method": "PATCH",
            "path": path,
            "bulkId": n.to_string(),
            "data": wire::patch_body(vec![json!({
                "op": "replace", "path": "active", "value": action == StatusAction::Enable
            })]),
        }),
    }
}

/// Cuts `ops` (with their serialised sizes) into requests of at most `limits`.
pub(super) fn batches(sizes: &[usize], limits: BulkLimits) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = ENVELOPE;
    for (i, size) in sizes.iter().enumerate() {
        let full = i - start >= limits.max_operations
            || (i > start && bytes + size + 1 > limits.max_payload_size);
        if full {
            out.push(start..i);
            start = i;
            bytes = ENVELOPE;
        }
        bytes += size + 1;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// The outcome of one operation of a Bulk answer.
fn outcome(action: StatusAction, op: &Value) -> Result<(), OpError> {
    let status = op
        .get("status")
        .and_then(|s| {
            s.as_u64()
                .or_else(|| s.as_str().and_then(|t| t.trim().parse().ok()))
        })
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(0);
    let detail = op
        .get("response")
        .and_then(wire::scim_error_body)
        .map(|e| e.to_string())
        .unwrap_or_default();
    let message = format!(
        "Bulk {}: HTTP {status} {detail}",
        op.get("method").and_then(Value::as_str).unwrap_or("")
    )
    .trim_end()
    .to_string();
    match status {
        200..=299 => Ok(()),
        404 if action == StatusAction::Delete => Ok(()),
        404 => Err(OpError::NotFound { message }),
        409 => Err(OpError::Conflict { message }),
        401 => Err(OpError::Auth { message }),
        429 | 500..=599 | 0 => Err(OpError::Unavailable { message }),
        s => Err(OpError::Rejected { status: s, message }),
    }
}

impl ScimConnector {
    /// `set_status` through Bulk requests; one result per item, in order.
    pub(super) async fn status_bulk(
        &self,
        action: StatusAction,
        items: &[StatusItem],
        limits: BulkLimits,
    ) -> Vec<Result<(), OpError>> {
        let ops: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(n, i)| operation(action, i, n))
            .collect();
        let sizes: Vec<usize> = ops.iter().map(|o| o.to_string().len()).collect();
        let mut results: Vec<Result<(), OpError>> = Vec::with_capacity(items.len());
        for range in batches(&sizes, limits) {
            let part = &ops[range.clone()];
            results.extend(self.bulk_request(action, part, range.start).await);
        }
        results
    }

    async fn bulk_request(
        &self,
        action: StatusAction,
        ops: &[Value],
        first: usize,
    ) -> Vec<Result<(), OpError>> {
        let body = json!({ "schemas": [wire::BULK_REQUEST], "Operations": ops });
        let url = match self.url("Bulk", None) {
            Ok(u) => u,
            Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
        };
        // PATCH of `active` and DELETE are idempotent: the whole request may be sent again.
        let req = self.request_json(Method::POST, url, body).idempotent(true);
        let answer = match self.http.send(req).await {
            Ok(resp) => resp.json::<Value>().map_err(OpError::from),
            Err(e) => Err(op_error(e, "POST /Bulk")),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return ops.iter().map(|_| Err(e.clone())).collect(),
        };
        let answered: Vec<Value> = answer
            .get("Operations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (0..ops.len())
            .map(|i| {
                let id = (first + i).to_string();
                let op = answered
                    .iter()
                    .find(|o| o.get("bulkId").and_then(Value::as_str) == Some(id.as_str()))
                    .or_else(|| {
                        // Without bulkIds in the answer: by position.
                        answered
                            .iter()
                            .all(|o| o.get("bulkId").is_none())
                            .then(|| answered.get(i))
                            .flatten()
                    });
                match op {
                    Some(op) => outcome(action, op),
                    None => Err(OpError::Unavailable {
                        message: "POST /Bulk: the answer does not report this operation".into(),
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_limits() {
        let limits = BulkLimits {
            max_operations: 10,
            max_payload_size: 1_000,
        };
        let sizes = vec![50; 25];
        let b = batches(&sizes, limits);
        assert_eq!(b, vec![0..10, 10..20, 20..25]);
        let big = vec![300; 5];
        // 128 + 3 × 301 = 1031 > 1000: two per request.
        assert_eq!(batches(&big, limits), vec![0..2, 2..4, 4..5]);
        // One operation above the limit still goes alone (the server judges it).
        assert_eq!(batches(&[5_000, 10], limits), vec![0..1, 1..2]);
        assert!(batches(&[], limits).is_empty());
    }

    #[test]
    fn outcomes() {
        let op = |s: &str| json!({"method": "DELETE", "status": s});
        assert!(outcome(StatusAction::Delete, &op("204")).is_ok());
        assert!(outcome(StatusAction::Delete, &op("404")).is_ok());
        assert!(matches!(
            outcome(StatusAction::Disable, &op("404")),
            Err(OpError::NotFound { .. })
        ));
        assert!(matches!(
            outcome(StatusAction::Disable, &op("503")),
            Err(OpError::Unavailable { .. })
        ));
        let e = outcome(
            StatusAction::Disable,
            &json!({"status": 400, "response": {"scimType": "invalidValue", "detail": "no"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalidValue: no"), "{e}");
    }
}
