//! Client of the metadata server: the TFS v2 REST routes the drive needs and
//! the `/api/` routes of upload sessions and read layouts.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::proto::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("metadata server answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("metadata server unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer from metadata server: {0}")]
    Decode(String),
    /// An upload's file moved on from the version it started from.
    #[error("{STALE_BASE}")]
    Conflict,
    /// A commit named objects the account no longer stores (SHA-1s).
    #[error("{MISSING_OBJECTS}{}", .0.join(" "))]
    Missing(Vec<String>),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Conflict | ClientError::Missing(_) => Some(StatusCode::CONFLICT),
            _ => None,
        }
    }

    /// The errno the drive's `fs/` routes name in their error body.
    pub fn errno(&self) -> Option<String> {
        match self {
            ClientError::Status { body, .. } => serde_json::from_str::<FsApiError>(body)
                .ok()
                .map(|e| e.errno),
            _ => None,
        }
    }
}

/// Bounds of every request to the metadata server.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Characters escaped in a path segment of a URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Percent-encodes a namespace path for a URL, keeping its slashes.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, SEGMENT).to_string()
}

#[derive(Clone)]
pub struct MetaClient {
    http: reqwest::Client,
    /// The server's policy, asked once.
    policy: std::sync::Arc<tokio::sync::OnceCell<Policy>>,
    /// The metadata servers, tried in turn when one cannot be reached.
    bases: std::sync::Arc<Vec<String>>,
    /// Index in `bases` of the server in use.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    appkey: String,
    pub appid: u64,
    pub uid: u64,
}

impl MetaClient {
    /// Looks up the app's appid with its appkey. `bases` is one URL or
    /// several separated by commas (servers of one cluster).
    pub async fn connect(bases: &str, appkey: &str, uid: u64) -> Result<Self, ClientError> {
        // No request waits without bound: a server that stops answering
        // fails the request after READ_TIMEOUT without a byte.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()?;
        let bases: Vec<String> = bases
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(ClientError::Decode("no metadata server URL".into()));
        }
        let mut client = MetaClient {
            policy: Default::default(),
            http,
            bases: std::sync::Arc::new(bases),
            current: Default::default(),
            appkey: appkey.to_string(),
            appid: 0,
            uid,
        };
        let r = client
            .send(
                client
                    .http
                    .get(format!("{}/v2/{appkey}/appid", client.base())),
            )
            .await?;
        #[derive(Deserialize)]
        struct AppId {
            #[serde(rename = "APP_ID")]
            app_id: String,
        }
        let a: AppId = Self::decode(r).await?;
        client.appid = a
            .app_id
            .parse()
            .map_err(|_| ClientError::Decode(format!("APP_ID {:?}", a.app_id)))?;
        Ok(client)
    }

    /// Sends a request. One that could not connect (never sent), or a read
    /// (GET) that timed out, goes to the next metadata server when there
    /// are several. A read that could not connect or was answered 503 is
    /// tried again a few times with backoff and jitter. Nothing else is
    /// repeated, so no change is ever applied twice, and no request takes
    /// much longer than its timeouts.
    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        use backon::BackoffBuilder;
        use std::sync::atomic::Ordering;
        let mut request = req.build()?;
        let idempotent = request.method() == Method::GET;
        let mut delays = backon::ExponentialBuilder::new()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(1))
            .with_max_times(3)
            .with_jitter()
            .build();
        let mut failovers = self.bases.len() - 1;
        loop {
            let Some(attempt) = request.try_clone() else {
                return Ok(self.http.execute(request).await?);
            };
            let result = self.http.execute(attempt).await;
            let unsent = matches!(&result, Err(e) if e.is_connect());
            let timed_out = matches!(&result, Err(e) if e.is_timeout());
            if failovers > 0 && (unsent || (idempotent && timed_out)) {
                failovers -= 1;
                let from = self.base().to_string();
                self.current.fetch_add(1, Ordering::Relaxed);
                let to = self.base();
                tracing::warn!(from, to, "metadata server unreachable; trying the next");
                if let Some(rest) = request.url().as_str().strip_prefix(from.as_str()) {
                    if let Ok(url) = reqwest::Url::parse(&format!("{to}{rest}")) {
                        *request.url_mut() = url;
                    }
                }
                continue;
            }
            let again = idempotent
                && match &result {
                    Err(_) => unsent,
                    Ok(r) => r.status() == StatusCode::SERVICE_UNAVAILABLE,
                };
            match delays.next() {
                Some(delay) if again => tokio::time::sleep(delay).await,
                _ => return Ok(result?),
            }
        }
    }

    /// The metadata server in use.
    pub fn base(&self) -> &str {
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[at % self.bases.len()]
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) async fn checked(r: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let html = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t == "text/html");
        let mut body = r.text().await.unwrap_or_default();
        // The TFS routes answer nginx's error page: keep its explanation.
        if let Some(text) = html
            .then(|| crate::meta::error_page_explanation(&body))
            .flatten()
        {
            body = text;
        }
        if status == StatusCode::CONFLICT && body == STALE_BASE {
            return Err(ClientError::Conflict);
        }
        if let Some(sha1s) = body
            .strip_prefix(MISSING_OBJECTS)
            .filter(|_| status == StatusCode::CONFLICT)
        {
            return Err(ClientError::Missing(
                sha1s.split(' ').map(str::to_string).collect(),
            ));
        }
        Err(ClientError::Status { status, body })
    }

    pub(crate) async fn decode<T: DeserializeOwned>(
        r: reqwest::Response,
    ) -> Result<T, ClientError> {
        let body = Self::checked(r).await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The server's grant-signing public key (hex), which names the
    /// cluster: every metadata server of it shares the key.
    pub async fn server_key(&self) -> Result<String, ClientError> {
        let r = self
            .send(self.http.get(format!("{}/api/pubkey", self.base())))
            .await?;
        Ok(Self::checked(r).await?.text().await?)
    }

    pub(crate) fn api(&self, method: Method, route: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/api/ns/{}/{}/{route}", self.base(), self.appid, self.uid),
            )
            .header(APPKEY_HEADER, &self.appkey)
    }

    fn v2(&self, method: Method, what: &str, path: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/v2/{}/{}/{}/{what}{}",
            self.base(),
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        self.http.request(method, url)
    }

    pub async fn policy(&self) -> Result<Policy, ClientError> {
        let fetch = || async {
            Self::decode(
                self.send(self.http.get(format!("{}/api/policy", self.base())))
                    .await?,
            )
            .await
        };
        self.policy.get_or_try_init(fetch).await.cloned()
    }

    pub async fn check(&self, req: &CheckRequest) -> Result<CheckResponse, ClientError> {
        Self::decode(self.send(self.api(Method::POST, "check").json(req)).await?).await
    }

    pub async fn prepare(&self, req: &PrepareRequest) -> Result<PrepareResponse, ClientError> {
        Self::decode(
            self.send(self.api(Method::POST, "prepare").json(req))
                .await?,
        )
        .await
    }

    pub async fn done(&self, req: &DoneRequest) -> Result<DoneResponse, ClientError> {
        Self::decode(self.send(self.api(Method::POST, "done").json(req)).await?).await
    }

    pub async fn partitions_check(
        &self,
        req: &PartitionsCheckRequest,
    ) -> Result<PartitionsCheckResponse, ClientError> {
        Self::decode(
            self.send(self.api(Method::POST, "partitions/check").json(req))
                .await?,
        )
        .await
    }

    pub async fn partitions_done(&self, req: &DoneRequest) -> Result<(), ClientError> {
        Self::checked(
            self.send(self.api(Method::POST, "partitions/done").json(req))
                .await?,
        )
        .await
        .map(drop)
    }

    pub async fn commit(&self, req: &CommitRequest) -> Result<DoneResponse, ClientError> {
        Self::decode(
            self.send(self.api(Method::POST, "commit").json(req))
                .await?,
        )
        .await
    }

    /// Reports a shard copy a read found missing or corrupt; answers
    /// whether the server found it bad.
    pub async fn report(&self, r: &ShardReport) -> Result<bool, ClientError> {
        Self::decode(self.send(self.api(Method::POST, "report").json(r)).await?).await
    }

    pub async fn layout(&self, path: &str) -> Result<FileLayout, ClientError> {
        Self::decode(
            self.send(self.api(Method::GET, "layout").query(&[("path", path)]))
                .await?,
        )
        .await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<TfsEntry>, ClientError> {
        let url = format!(
            "{}/v2/{}/metadata/{}/{}/dir{}",
            self.base(),
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        Self::decode(self.send(self.http.get(url)).await?).await
    }

    pub async fn stat_file(&self, path: &str) -> Result<TfsEntry, ClientError> {
        let url = format!(
            "{}/v2/{}/metadata/{}/{}/file{}",
            self.base(),
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        Self::decode(self.send(self.http.get(url)).await?).await
    }

    pub async fn remove_file(&self, path: &str) -> Result<(), ClientError> {
        Self::checked(self.send(self.v2(Method::DELETE, "file", path)).await?)
            .await
            .map(drop)
    }

    pub async fn remove_dir(&self, path: &str) -> Result<(), ClientError> {
        Self::checked(self.send(self.v2(Method::DELETE, "dir", path)).await?)
            .await
            .map(drop)
    }

    pub async fn create_dir(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let r = self
            .send(
                self.v2(Method::POST, "dir", path)
                    .query(&[("recursive", u8::from(recursive))]),
            )
            .await?;
        Self::checked(r).await.map(drop)
    }

    // ---- the drive's extension: the namespace by node id ----

    async fn fs_get<T: DeserializeOwned>(
        &self,
        route: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        Self::decode(
            self.send(self.api(Method::GET, &format!("fs/{route}")).query(query))
                .await?,
        )
        .await
    }

    async fn fs_post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::decode(
            self.send(self.api(Method::POST, &format!("fs/{route}")).json(body))
                .await?,
        )
        .await
    }

    pub async fn fs_root(&self) -> Result<NodeAttr, ClientError> {
        self.fs_get("root", &[]).await
    }

    pub async fn fs_node(&self, id: i64) -> Result<NodeAttr, ClientError> {
        self.fs_get(&format!("node/{id}"), &[]).await
    }

    pub async fn fs_lookup(&self, parent: i64, name: &str) -> Result<NodeAttr, ClientError> {
        self.fs_get(&format!("lookup/{parent}"), &[("name", name)])
            .await
    }

    pub async fn fs_children(&self, id: i64) -> Result<Vec<NodeAttr>, ClientError> {
        self.fs_get(&format!("children/{id}"), &[]).await
    }

    pub async fn fs_layout(&self, id: i64) -> Result<FileLayout, ClientError> {
        self.fs_get(&format!("layout/{id}"), &[]).await
    }

    pub async fn fs_statfs(&self) -> Result<FsStats, ClientError> {
        self.fs_get("statfs", &[]).await
    }

    pub async fn fs_make(&self, req: &MakeRequest) -> Result<NodeAttr, ClientError> {
        self.fs_post("make", req).await
    }

    pub async fn fs_reserve_ids(&self, count: u32) -> Result<IdRange, ClientError> {
        self.fs_post("ids", &IdsRequest { count }).await
    }

    pub async fn fs_remove(&self, req: &RemoveRequest) -> Result<DirChange, ClientError> {
        self.fs_post("remove", req).await
    }

    pub async fn fs_rename(&self, req: &RenameRequest) -> Result<(), ClientError> {
        self.fs_post("rename", req).await
    }

    pub async fn fs_setattr(&self, req: &SetAttrRequest) -> Result<NodeAttr, ClientError> {
        self.fs_post("setattr", req).await
    }

    pub async fn fs_link(&self, req: &LinkRequest) -> Result<NodeAttr, ClientError> {
        self.fs_post("link", req).await
    }

    /// An extended attribute's value (base64).
    pub async fn fs_xattr(&self, id: i64, name: &str) -> Result<XattrValue, ClientError> {
        self.fs_get(&format!("xattr/{id}"), &[("name", name)]).await
    }

    pub async fn fs_xattr_names(&self, id: i64) -> Result<Vec<String>, ClientError> {
        self.fs_get(&format!("xattrs/{id}"), &[]).await
    }

    pub async fn fs_setxattr(&self, req: &SetXattrRequest) -> Result<(), ClientError> {
        self.fs_post("setxattr", req).await
    }

    pub async fn fs_removexattr(&self, req: &RemoveXattrRequest) -> Result<(), ClientError> {
        self.fs_post("removexattr", req).await
    }
}
