//! The handlers of the fake Covata's routes (see [`super`]): the token grants, the user
//! calls, bulk actions and the CSV import, each checking its part of the contract.

use super::*;

/// `POST /api/oauth/token`.
pub(super) async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !has_content_type(&headers, "application/x-www-form-urlencoded") {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    match basic_credentials(&headers) {
        Some((id, secret)) if id == CLIENT_ID && secret == CLIENT_SECRET => {}
        _ => {
            return Err(ApiError::oauth(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Bad client credentials",
            ));
        }
    }
    let form = form_fields(&body).map_err(|key| {
        ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("parameter `{key}` given more than once"),
        )
    })?;
    let field = |name: &str| form.get(name).map(String::as_str);
    let mut inner = lock(&shared);
    let answer = match field("grant_type") {
        Some("password") => {
            if field("username") != Some(USERNAME) || field("password") != Some(PASSWORD) {
                return Err(ApiError::oauth(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "Bad credentials",
                ));
            }
            inner.password_grants += 1;
            inner.issue_tokens()
        }
        Some("refresh_token") => {
            let Some(refresh) = field("refresh_token") else {
                return Err(ApiError::oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "missing refresh_token",
                ));
            };
            if !inner.refresh_tokens.remove(refresh) {
                return Err(ApiError::oauth(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "Invalid refresh token",
                ));
            }
            inner.refresh_grants += 1;
            inner.issue_tokens()
        }
        Some(other) => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            ));
        }
        None => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
            ));
        }
    };
    drop(inner);
    let mut response = axum::Json(answer).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/users?offset=&limit=&email=&name=&role=&enabled=`.
pub(super) async fn list_users(
    State(shared): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let mut offset = 0usize;
    let mut limit = DEFAULT_PAGE_LIMIT;
    let mut email = None;
    let mut name = None;
    let mut role = None;
    let mut enabled = None;
    for (key, value) in query_pairs(query.as_deref())? {
        let number = |v: &str| {
            v.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter `{key}` must be a non-negative integer"
                ))
            })
        };
        match key.as_str() {
            "offset" => offset = number(&value)?,
            "limit" => limit = number(&value)?.min(MAX_PAGE_LIMIT),
            "email" => email = Some(value.to_lowercase()),
            "name" => name = Some(value.to_lowercase()),
            "role" => role = Some(value),
            "enabled" => {
                enabled = Some(value.parse::<bool>().map_err(|_| {
                    ApiError::bad_request("query parameter `enabled` must be true or false")
                })?);
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{key}` (known: {})",
                    LIST_PARAMETERS.join(", ")
                )));
            }
        }
    }
    let inner = lock(&shared);
    let matching: Vec<&FakeUser> = inner
        .users
        .values()
        .filter(|u| {
            email
                .as_ref()
                .is_none_or(|e| u.email.to_lowercase().contains(e.as_str()))
        })
        .filter(|u| {
            name.as_ref().is_none_or(|n| {
                [&u.first_name, &u.last_name, &u.other_name]
                    .into_iter()
                    .flatten()
                    .any(|part| part.to_lowercase().contains(n.as_str()))
            })
        })
        .filter(|u| role.as_ref().is_none_or(|r| u.roles.contains(r)))
        .filter(|u| enabled.is_none_or(|e| u.enabled == e))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| user_json(u))
        .collect();
    Ok(axum::Json(json!({
        "items": items,
        "count": matching.len(),
        "offset": offset,
    })))
}

/// `GET /api/v1/users/{id}`.
pub(super) async fn get_user(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = path_id(path)?;
    let inner = lock(&shared);
    let seq = inner
        .by_id
        .get(&id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    Ok(axum::Json(user_json(&inner.users[seq])))
}

/// `POST /api/v1/users`.
pub(super) async fn create_user(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let fields = json_object(&body)?;
    let mut user = FakeUser::new("", &[]);
    let mut email = None;
    let mut role_set = None;
    for (key, value) in &fields {
        match key.as_str() {
            "email" => email = opt_string(key, value)?,
            "firstName" => user.first_name = opt_string(key, value)?,
            "lastName" => user.last_name = opt_string(key, value)?,
            "otherName" => user.other_name = opt_string(key, value)?,
            "mobileNumber" => user.mobile_number = opt_string(key, value)?,
            "planId" => user.plan_id = plan_id(value)?,
            "roles" => role_set = Some(roles(value)?),
            _ => return Err(ApiError::bad_request(format!("unknown field `{key}`"))),
        }
    }
    let email = email
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("field `email` is required"))?;
    if !valid_email(&email) {
        return Err(ApiError::bad_request(format!(
            "field `email`: {email:?} is not a valid address"
        )));
    }
    user.email = email;
    user.roles = role_set.ok_or_else(|| ApiError::bad_request("field `roles` is required"))?;
    let mut inner = lock(&shared);
    if inner.email_taken(&user.email) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a user with email {} already exists", user.email),
        ));
    }
    let id = inner.insert(user);
    let seq = inner.by_id[&id];
    let body = user_json(&inner.users[&seq]);
    drop(inner);
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/users/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PUT /api/v1/users/{id}`.
pub(super) async fn update_user(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let id = path_id(path)?;
    require_json(&headers)?;
    let fields = json_object(&body)?;
    // Validate everything before changing anything.
    type Change = Box<dyn FnOnce(&mut FakeUser) + Send>;
    let mut changes: Vec<Change> = Vec::new();
    for (key, value) in &fields {
        match key.as_str() {
            "email" => {
                return Err(ApiError::bad_request("field `email` cannot be updated"));
            }
            "firstName" => {
                let v = opt_string(key, value)?;
                changes.push(Box::new(move |u| u.first_name = v));
            }
            "lastName" => {
                let v = opt_string(key, value)?;
                changes.push(Box::new(move |u| u.last_name = v));
            }
            "otherName" => {
                let v = opt_string(key, value)?;
                changes.push(Box::new(move |u| u.other_name = v));
            }
            "mobileNumber" => {
                let v = opt_string(key, value)?;
                changes.push(Box::new(move |u| u.mobile_number = v));
            }
            "planId" => {
                let v = plan_id(value)?;
                changes.push(Box::new(move |u| u.plan_id = v));
            }
            "roles" => {
                let v = roles(value)?;
                changes.push(Box::new(move |u| u.roles = v));
            }
            "forceResetPassword" => {
                let v = boolean(key, value)?;
                changes.push(Box::new(move |u| u.force_reset_password = v));
            }
            "resetFailedLogins" => {
                if boolean(key, value)? {
                    changes.push(Box::new(|u| {
                        u.num_failed_logins = 0;
                        u.account_non_locked = true;
                    }));
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown or read-only field `{key}`"
                )));
            }
        }
    }
    let mut inner = lock(&shared);
    let user = inner
        .user_mut(&id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    for change in changes {
        change(user);
    }
    Ok(axum::Json(user_json(user)))
}

/// `DELETE /api/v1/users/{id}`.
pub(super) async fn delete_user(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(path)?;
    lock(&shared)
        .remove(&id)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| ApiError::not_found(&id))
}

/// `PUT /api/v1/users/{id}/enable`: the documented toggle (counted; dirsync must not use it).
pub(super) async fn toggle_user(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let mut inner = lock(&shared);
    inner.toggle_calls += 1;
    let id = path_id(path)?;
    let user = inner
        .user_mut(&id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    user.enabled = !user.enabled;
    Ok(axum::Json(user_json(user)))
}

/// `POST /api/v1/users/bulk?action=..` with `{"ids": [..]}` (at least `{}`) → 200, empty body.
/// Unknown ids are ignored (assumed).
pub(super) async fn bulk(
    State(shared): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let mut action = None;
    for (key, value) in query_pairs(query.as_deref())? {
        if key == "action" {
            action = Some(value);
        } else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{key}`"
            )));
        }
    }
    let action = action.ok_or_else(|| {
        ApiError::bad_request(format!(
            "query parameter `action` is required (one of {})",
            BULK_ACTIONS.join(", ")
        ))
    })?;
    if !BULK_ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown action `{action}`: expected one of {}",
            BULK_ACTIONS.join(", ")
        )));
    }
    // A missing body is a 400 even without a content type: that is the documented mistake.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "a JSON object body is required (at least {})",
        ));
    }
    require_json(&headers)?;
    let fields = json_object(&body)?;
    let mut ids = Vec::new();
    for (key, value) in &fields {
        match (key.as_str(), value) {
            ("ids", Value::Null) => {}
            ("ids", Value::Array(items)) => {
                for item in items {
                    let Value::String(id) = item else {
                        return Err(ApiError::bad_request("field `ids` must hold only strings"));
                    };
                    ids.push(id.clone());
                }
            }
            ("ids", _) => {
                return Err(ApiError::bad_request(
                    "field `ids` must be an array of user ids",
                ));
            }
            _ => return Err(ApiError::bad_request(format!("unknown field `{key}`"))),
        }
    }
    let mut inner = lock(&shared);
    if let Some(limit) = inner.bulk_limit
        && ids.len() > limit
    {
        return Err(ApiError::bad_request(format!(
            "at most {limit} ids per bulk request, got {}",
            ids.len()
        )));
    }
    for id in &ids {
        if action == "delete" {
            inner.remove(id);
            continue;
        }
        let Some(user) = inner.user_mut(id) else {
            continue;
        };
        match action.as_str() {
            "disable" => user.enabled = false,
            "enable" => user.enabled = true,
            "expire" => user.sessions_expired += 1,
            "resetPassword" => {
                user.force_reset_password = true;
                user.password_resets += 1;
            }
            _ => unreachable!("checked above"),
        }
    }
    inner.bulk_batches.push((action, ids.len()));
    Ok(StatusCode::OK)
}

/// `POST /api/v1/users/import`: `multipart/form-data` with one part `file` holding the CSV.
pub(super) async fn import(
    State(shared): State<Shared>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    if !has_content_type(&headers, "multipart/form-data") {
        return Err(ApiError::unsupported_media_type(
            "multipart/form-data",
            content_type(&headers),
        ));
    }
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
    let mut file: Option<Bytes> = None;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("").to_owned();
        if name != "file" {
            return Err(ApiError::bad_request(format!(
                "unexpected part `{name}`: only `file` is accepted"
            )));
        }
        if file.is_some() {
            return Err(ApiError::bad_request("more than one part named `file`"));
        }
        file = Some(
            field
                .bytes()
                .await
                .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?,
        );
    }
    let file = file.ok_or_else(|| ApiError::bad_request("the part `file` is required"))?;
    let errors = import_csv(&mut lock(&shared), &file)?;
    Ok(axum::Json(json!({ "errors": errors })))
}

/// Creates a user per valid row; returns `"Line <n>: <email>: <reason>"` per bad row, `n` the
/// 1-based physical line where the row starts (the header is line 1). A bad header fails the
/// whole file (400).
fn import_csv(inner: &mut Inner, data: &[u8]) -> Result<Vec<String>, ApiError> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => return Err(ApiError::bad_request("the CSV file is empty")),
        Some(Err(e)) => return Err(ApiError::bad_request(format!("unreadable CSV: {e}"))),
        Some(Ok(header)) => header,
    };
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_lowercase())
        .collect();
    let mut index = [0usize; IMPORT_COLUMNS.len()];
    for (slot, column) in index.iter_mut().zip(IMPORT_COLUMNS) {
        let wanted = column.to_lowercase();
        let found: Vec<usize> = (0..names.len()).filter(|&i| names[i] == wanted).collect();
        match found.as_slice() {
            [i] => *slot = *i,
            [] => {
                return Err(ApiError::bad_request(format!(
                    "CSV header: missing column `{column}` (expected {})",
                    IMPORT_COLUMNS.join(", ")
                )));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "CSV header: column `{column}` given more than once"
                )));
            }
        }
    }
    if let Some(extra) = names
        .iter()
        .find(|n| !IMPORT_COLUMNS.iter().any(|c| c.to_lowercase() == **n))
    {
        return Err(ApiError::bad_request(format!(
            "CSV header: unknown column `{extra}` (expected {})",
            IMPORT_COLUMNS.join(", ")
        )));
    }
    let mut errors = Vec::new();
    for record in records {
        let record = record.map_err(|e| ApiError::bad_request(format!("unreadable CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| -> Result<String, ()> {
            let raw = record.get(index[i]).unwrap_or(b"");
            std::str::from_utf8(raw)
                .map(|s| s.trim().to_owned())
                .map_err(|_| ())
        };
        let email = field(0).unwrap_or_default();
        let row = (|| -> Result<FakeUser, String> {
            if record.len() != names.len() {
                return Err(format!(
                    "expected {} fields, found {}",
                    names.len(),
                    record.len()
                ));
            }
            let mut values = Vec::with_capacity(IMPORT_COLUMNS.len());
            for (i, column) in IMPORT_COLUMNS.iter().enumerate() {
                values.push(field(i).map_err(|()| format!("{column}: invalid UTF-8"))?);
            }
            let optional = |s: &String| (!s.is_empty()).then(|| s.clone());
            if values[0].is_empty() {
                return Err("Email is required".to_owned());
            }
            if !valid_email(&values[0]) {
                return Err("Email is not a valid address".to_owned());
            }
            if inner.email_taken(&values[0]) {
                return Err(format!("a user with email {} already exists", values[0]));
            }
            let roles: Vec<String> = values[4]
                .split(';')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            if roles.is_empty() {
                return Err("Role is required".to_owned());
            }
            for role in &roles {
                check_role(role)?;
            }
            let mut user = FakeUser::new(&values[0], &[]);
            user.first_name = optional(&values[1]);
            user.last_name = optional(&values[2]);
            user.mobile_number = optional(&values[3]);
            user.roles = normalize_roles(roles);
            user.account_type = optional(&values[5]);
            user.plan_id = optional(&values[6]);
            Ok(user)
        })();
        match row {
            Ok(user) => {
                inner.insert(user);
            }
            Err(reason) => errors.push(format!("Line {line}: {email}: {reason}")),
        }
    }
    Ok(errors)
}
