//! The HTTP surface: the Agent and Customer Chat Web APIs, the RTM upgrade
//! routes for both, the customer token endpoint, health and readiness.
//! [`app`] builds the `Router`; the server serves it and tests call it.
//!
//! Errors become wire form in exactly one place ([`ApiError`]): the protocol's
//! `{"error":{...}}` body with the HTTP status of proto-docs/errors.md.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chatgate_engine::{Engine, Request, Requester, Side, validation};
use chatgate_protocol::{ErrorBody, ErrorType, Version};
use chatgate_rtm::RtmConfig;
use futures_util::StreamExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

/// Limits of the HTTP and WebSocket transports.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest Web API request body (`entity_too_large` above it).
    pub max_body: usize,
    /// WebSocket read buffer per connection (bytes read from the socket at a
    /// time; tungstenite's default of 128 KiB per connection must not ship).
    /// 512 bytes hold a typical request frame (a login, a `send_event`); a
    /// larger frame grows the buffer while it is read. Measured (19,000 idle
    /// sessions): 4 KiB cost 3 KiB more per session than 1 KiB, and 512
    /// bytes 0.55 KiB less (4.6 against 5.15 KiB of server RSS) at the same
    /// login CPU; see loadtest/README.md. `--ws-read-buffer` sets it.
    pub ws_read_buffer: usize,
    /// Bytes of outgoing frames collected before a write.
    pub ws_write_buffer: usize,
    /// Most bytes a connection may have waiting to be written.
    pub ws_max_write_buffer: usize,
    /// Hard limit of one WebSocket message; a larger one ends the session.
    /// Requests above `rtm.max_request_frame` but below this get an
    /// `entity_too_large` response and the connection stays.
    pub ws_max_message: usize,
    /// RTM session limits.
    pub rtm: RtmConfig,
    /// Base URL clients reach this deployment at (`https://chat.example.com`),
    /// returned by `GET /v1/apis`; default `http://<Host header>`.
    pub public_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_body: 1024 * 1024,
            ws_read_buffer: 512,
            ws_write_buffer: 8 * 1024,
            ws_max_write_buffer: 1024 * 1024,
            ws_max_message: 4 * 1024 * 1024,
            rtm: RtmConfig::default(),
            public_url: None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Engine,
    config: Arc<WebConfig>,
    /// The sessions' limits, shared by every session (not copied into each).
    rtm: Arc<RtmConfig>,
}

/// Builds the router.
pub fn app(engine: Engine, config: WebConfig) -> Router {
    let state = AppState {
        engine,
        rtm: Arc::new(config.rtm.clone()),
        config: Arc::new(config),
    };
    Router::new()
        .route("/{version}/agent/action/{method}", post(agent_action))
        .route("/{version}/agent/rtm/ws", any(agent_rtm))
        .route("/{version}/customer/action/{method}", post(customer_action))
        .route("/{version}/customer/rtm/ws", any(customer_rtm))
        .route("/customer/token", post(customer_token))
        .route("/v1/auth", post(api_auth))
        .route("/v1/refresh_token", post(api_refresh))
        .route("/v1/apis", get(api_urls))
        .route(
            "/{version}/configuration/action/{method}",
            post(configuration_action),
        )
        .route("/files/{org}/{id}/{name}", get(serve_file))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError(ErrorBody::new(ErrorType::NotFound, "no such endpoint")) })
        // Bodies are bounded by `max_body` in the handlers, so the error is
        // the protocol's, not axum's.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Marks requests that arrived over the TLS listener (the server adds it as
/// an `Extension` there), so URLs handed back say `https`.
#[derive(Clone, Copy, Debug)]
pub struct Https;

/// The base URL of this deployment as the client reached it.
fn base_url(state: &AppState, headers: &HeaderMap, https: bool) -> Result<String, ApiError> {
    Ok(match &state.config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!(
            "{}://{}",
            if https { "https" } else { "http" },
            header_str(headers, "host")?.unwrap_or("127.0.0.1")
        ),
    })
}

/// An error on the Web API.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self
            .0
            .data
            .as_ref()
            .and_then(|d| d.get("retry_after"))
            .and_then(Value::as_u64);
        let mut resp = json_response(status, &self.0.into_envelope());
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("responses serialize");
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn path_version(segment: &str) -> Result<Version, ApiError> {
    Version::from_path_segment(segment).ok_or_else(|| {
        ApiError(ErrorBody::new(
            ErrorType::UnsupportedVersion,
            format!("unsupported API version `{segment}` (supported: v3.5, v3.6)"),
        ))
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError(validation(format!("header `{name}` is not valid text")))),
    }
}

/// `organization_id` of the customer endpoints.
#[derive(Debug, Default, serde::Deserialize)]
struct OrgQuery {
    organization_id: Option<String>,
}

async fn read_json(state: &AppState, body: Body) -> Result<Value, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, state.config.max_body)
        .await
        .map_err(|_| {
            ApiError(ErrorBody::new(
                ErrorType::EntityTooLarge,
                format!(
                    "request body exceeds the limit of {} bytes",
                    state.config.max_body
                ),
            ))
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(validation(format!("malformed JSON body: {e}"))))
}

async fn agent_action(
    State(state): State<AppState>,
    Path((version, method)): Path<(String, String)>,
    https: Option<axum::Extension<Https>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let requester = Requester::Web {
        authorization: header_str(&headers, "authorization")?.map(str::to_owned),
    };
    if method == "upload_file" {
        return counted_upload(state, &version, &headers, body, requester, https.is_some()).await;
    }
    let author_id = header_str(&headers, "x-author-id")?.map(str::to_owned);
    action(
        state, &version, method, &headers, body, requester, author_id,
    )
    .await
}

async fn configuration_action(
    State(state): State<AppState>,
    Path((version, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let requester = Requester::ConfigWeb {
        authorization: header_str(&headers, "authorization")?.map(str::to_owned),
    };
    action(state, &version, method, &headers, body, requester, None).await
}

async fn customer_action(
    State(state): State<AppState>,
    Path((version, method)): Path<(String, String)>,
    Query(query): Query<OrgQuery>,
    https: Option<axum::Extension<Https>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let requester = Requester::CustomerWeb {
        authorization: header_str(&headers, "authorization")?.map(str::to_owned),
        organization_id: query.organization_id,
    };
    if method == "upload_file" {
        return counted_upload(state, &version, &headers, body, requester, https.is_some()).await;
    }
    action(state, &version, method, &headers, body, requester, None).await
}

/// One Web API call, agent or customer side.
async fn action(
    state: AppState,
    version: &str,
    method: String,
    headers: &HeaderMap,
    body: Body,
    requester: Requester,
    author_id: Option<String>,
) -> Result<Response, ApiError> {
    let prepared = async {
        let mut version = path_version(version)?;
        if let Some(v) = header_str(headers, "x-api-version")? {
            let requested: Version =
                v.parse()
                    .map_err(|e: chatgate_protocol::version::UnsupportedVersion| {
                        ApiError(ErrorBody::new(ErrorType::UnsupportedVersion, e.to_string()))
                    })?;
            if requested < version {
                return Err(ApiError(validation(format!(
                    "`X-API-Version: {requested}` is lower than the URL's version {version}"
                ))));
            }
            version = requested;
        }
        Ok((version, read_json(&state, body).await?))
    };
    let (version, payload) = match prepared.await {
        Ok(ready) => ready,
        Err(refused) => {
            // Never dispatched: counted here, in the same request metrics.
            state
                .engine
                .record_request(&requester, Some(&method), Err(&refused.0), None);
            return Err(refused);
        }
    };
    let request = Request {
        requester,
        version,
        action: method.clone(),
        payload,
        request_id: None,
        author_id,
    };
    let span = tracing::info_span!("web", action = %method, version = %version);
    let reply = state
        .engine
        .execute(request)
        .instrument(span)
        .await
        .map_err(ApiError)?;
    Ok(json_response(StatusCode::OK, &reply.payload))
}

fn upload_too_large() -> ApiError {
    ApiError(ErrorBody::new(
        ErrorType::EntityTooLarge,
        "Upload limit exceeded (10MB).",
    ))
}

/// [`upload`], counted and timed in the request metrics like the calls the
/// dispatcher serves.
async fn counted_upload(
    state: AppState,
    version: &str,
    headers: &HeaderMap,
    body: Body,
    requester: Requester,
    https: bool,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let engine = state.engine.clone();
    let who = requester.clone();
    let result = upload(state, version, headers, body, requester, https).await;
    engine.record_request(
        &who,
        Some("upload_file"),
        result.as_ref().map(|_| ()).map_err(|e| &e.0),
        Some(started.elapsed()),
    );
    result
}

/// `upload_file`: `multipart/form-data` with one part named `file`.
async fn upload(
    state: AppState,
    version: &str,
    headers: &HeaderMap,
    body: Body,
    requester: Requester,
    https: bool,
) -> Result<Response, ApiError> {
    let version = path_version(version)?;
    let content_type = header_str(headers, "content-type")?.unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError(validation(
            "`upload_file` takes multipart/form-data with a part named `file`",
        ))
    })?;
    let max = chatgate_engine::MAX_UPLOAD as u64;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max + 64 * 1024)
            .per_field(max),
    );
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let multipart_error = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            upload_too_large()
        }
        other => ApiError(validation(format!("malformed multipart body: {other}"))),
    };
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        if file.is_some() {
            return Err(ApiError(validation("send exactly one part named `file`")));
        }
        let name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let bytes = field.bytes().await.map_err(multipart_error)?;
        file = Some(chatgate_engine::UploadedFile {
            name,
            content_type,
            bytes,
        });
    }
    let file = file.ok_or_else(|| ApiError(validation("no part named `file`")))?;
    let span = tracing::info_span!("web", action = "upload_file", version = %version);
    let path = state
        .engine
        .upload_file(requester, version, file)
        .instrument(span)
        .await
        .map_err(ApiError)?;
    let url = format!("{}{path}", base_url(&state, headers, https)?);
    Ok(json_response(
        StatusCode::OK,
        &chatgate_engine::upload_response(&url),
    ))
}

/// `GET /files/<organization>/<id>/<name>`: an upload, to anyone holding
/// its URL (the id is 128 random bits, like the vendor's CDN links). Served
/// so that a browser never runs it: `nosniff` and a sandboxing CSP.
async fn serve_file(
    State(state): State<AppState>,
    Path((org, id, _name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let file = state
        .engine
        .served_file(&org, &id)
        .await
        .map_err(ApiError)?
        .ok_or_else(|| ApiError(ErrorBody::new(ErrorType::NotFound, "no such file")))?;
    let inline = file.content_type.starts_with("image/");
    let mut resp = Response::new(Body::from(file.bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        chatgate_engine::encode_segment(&file.name)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

async fn api_auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = header_str(&headers, "x-api-key")?.ok_or_else(|| {
        ApiError(ErrorBody::new(
            ErrorType::Authentication,
            "missing `X-Api-Key` header",
        ))
    })?;
    let payload = read_json(&state, body).await?;
    let req: chatgate_protocol::chats::ApiAuthRequest = serde_json::from_value(payload)
        .map_err(|e| ApiError(validation(format!("invalid body: {e}"))))?;
    let token = state
        .engine
        .exchange_api_key(key, &req.secret)
        .await
        .map_err(ApiError)?;
    Ok(json_response(StatusCode::OK, &token))
}

async fn api_refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = header_str(&headers, "authorization")?.ok_or_else(|| {
        ApiError(ErrorBody::new(
            ErrorType::Authentication,
            "missing `Authorization` header",
        ))
    })?;
    let token = state
        .engine
        .refresh_access_token(auth)
        .await
        .map_err(ApiError)?;
    Ok(json_response(StatusCode::OK, &token))
}

/// `GET /v1/apis`: the base URLs of this deployment's APIs.
async fn api_urls(
    State(state): State<AppState>,
    https: Option<axum::Extension<Https>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = header_str(&headers, "authorization")?.ok_or_else(|| {
        ApiError(ErrorBody::new(
            ErrorType::Authentication,
            "missing `Authorization` header",
        ))
    })?;
    state
        .engine
        .check_agent_credentials(auth)
        .map_err(ApiError)?;
    let base = base_url(&state, &headers, https.is_some())?;
    let ws = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let body = serde_json::json!({
        "apis": {
            "agent_chat": format!("{base}/v3.5/agent/action"),
            "agent_chat_rtm": format!("{ws}/v3.5/agent/rtm/ws"),
            "customer_chat": format!("{base}/v3.5/customer/action"),
            "customer_chat_rtm": format!("{ws}/v3.5/customer/rtm/ws"),
            "configuration": format!("{base}/v3.5/configuration/action"),
            "customer_token": format!("{base}/customer/token"),
            "auth": format!("{base}/v1/auth"),
        }
    });
    Ok(json_response(StatusCode::OK, &body))
}

async fn customer_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let origin = header_str(&headers, "origin")?.map(str::to_owned);
    let payload = read_json(&state, body).await?;
    let req = serde_json::from_value(payload)
        .map_err(|e| ApiError(validation(format!("invalid body: {e}"))))?;
    let resp = state
        .engine
        .issue_customer_token(req, origin.as_deref())
        .await
        .map_err(ApiError)?;
    Ok(json_response(StatusCode::OK, &resp))
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// A read error of an upgraded socket (axum wraps tungstenite's).
struct WsReadError(axum::Error);

impl std::fmt::Display for WsReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl chatgate_rtm::ReadError for WsReadError {
    fn peer_gone(&self) -> bool {
        use std::error::Error as _;
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        matches!(
            self.0.source().and_then(|e| e.downcast_ref::<WsError>()),
            Some(
                WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Io(_)
                    | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            )
        )
    }
}

async fn agent_rtm(
    State(state): State<AppState>,
    Path(version): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let client = chatgate_engine::ClientInfo {
        ip: Some(peer.ip()),
        user_agent: None,
    };
    upgrade(state, &version, ws, Side::Agent, client)
}

/// `organization_id` in the query is accepted; the organization comes from
/// the token.
async fn customer_rtm(
    State(state): State<AppState>,
    Path(version): Path<String>,
    Query(_org): Query<OrgQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let client = chatgate_engine::ClientInfo {
        ip: Some(peer.ip()),
        user_agent: header_str(&headers, "user-agent")
            .ok()
            .flatten()
            .map(str::to_owned),
    };
    upgrade(state, &version, ws, Side::Customer, client)
}

fn upgrade(
    state: AppState,
    version: &str,
    ws: Upgrade,
    side: Side,
    client: chatgate_engine::ClientInfo,
) -> Result<Response, ApiError> {
    let version = path_version(version)?;
    let ws = ws.map_err(|e| ApiError(validation(format!("WebSocket upgrade required: {e}"))))?;
    let config = &state.config;
    let rtm = state.rtm.clone();
    let engine = state.engine.clone();
    Ok(ws
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_write_buffer)
        .max_write_buffer_size(config.ws_max_write_buffer)
        .max_message_size(config.ws_max_message)
        .max_frame_size(config.ws_max_message)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            let stream = stream.map(|r| r.map_err(WsReadError));
            // Debug level: at INFO, formatting a span's fields for every
            // connection was 2.7% of a login's CPU; the session's own INFO
            // line carries its connection, side and version.
            let span = tracing::debug_span!("rtm", version = %version, side = ?side);
            chatgate_rtm::run(engine, side, version, client, sink, stream, rtm).instrument(span)
        }))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.engine.ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
    }
}
