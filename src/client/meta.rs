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
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Conflict => Some(StatusCode::CONFLICT),
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

/// Sends a request. A read (GET) that could not connect, or that the
/// server answered 503, is tried again a few times with backoff and
/// jitter; nothing else is, so no change is ever applied twice and no
/// request takes much longer than its timeouts.
async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
    use backon::BackoffBuilder;
    let retries = backon::ExponentialBuilder::new()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(1))
        .with_max_times(3)
        .with_jitter()
        .build();
    let idempotent = req
        .try_clone()
        .and_then(|r| r.build().ok())
        .is_some_and(|r| r.method() == Method::GET);
    let mut delays = retries.into_iter();
    loop {
        let Some(attempt) = req.try_clone() else {
            return Ok(req.send().await?);
        };
        let result = attempt.send().await;
        let again = idempotent
            && match &result {
                Err(e) => e.is_connect(),
                Ok(r) => r.status() == StatusCode::SERVICE_UNAVAILABLE,
            };
        match delays.next() {
            Some(delay) if again => tokio::time::sleep(delay).await,
            _ => return Ok(result?),
        }
    }
}

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
    base: String,
    appkey: String,
    pub appid: u64,
    pub uid: u64,
}

impl MetaClient {
    /// Looks up the app's appid with its appkey.
    pub async fn connect(base: &str, appkey: &str, uid: u64) -> Result<Self, ClientError> {
        // No request waits without bound: a server that stops answering
        // fails the request after READ_TIMEOUT without a byte.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()?;
        let base = base.trim_end_matches('/').to_string();
        let r = send(http.get(format!("{base}/v2/{appkey}/appid"))).await?;
        #[derive(Deserialize)]
        struct AppId {
            #[serde(rename = "APP_ID")]
            app_id: String,
        }
        let a: AppId = Self::decode(r).await?;
        let appid = a
            .app_id
            .parse()
            .map_err(|_| ClientError::Decode(format!("APP_ID {:?}", a.app_id)))?;
        Ok(MetaClient {
            policy: Default::default(),
            http,
            base,
            appkey: appkey.to_string(),
            appid,
            uid,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) async fn checked(r: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if status == StatusCode::CONFLICT && body == STALE_BASE {
            return Err(ClientError::Conflict);
        }
        Err(ClientError::Status { status, body })
    }

    pub(crate) async fn decode<T: DeserializeOwned>(
        r: reqwest::Response,
    ) -> Result<T, ClientError> {
        let body = Self::checked(r).await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub(crate) fn api(&self, method: Method, route: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/api/ns/{}/{}/{route}", self.base, self.appid, self.uid),
            )
            .header(APPKEY_HEADER, &self.appkey)
    }

    fn v2(&self, method: Method, what: &str, path: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/v2/{}/{}/{}/{what}{}",
            self.base,
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        self.http.request(method, url)
    }

    pub async fn policy(&self) -> Result<Policy, ClientError> {
        let fetch = || async {
            Self::decode(send(self.http.get(format!("{}/api/policy", self.base))).await?).await
        };
        self.policy.get_or_try_init(fetch).await.cloned()
    }

    pub async fn check(&self, req: &CheckRequest) -> Result<CheckResponse, ClientError> {
        Self::decode(send(self.api(Method::POST, "check").json(req)).await?).await
    }

    pub async fn prepare(&self, req: &PrepareRequest) -> Result<PrepareResponse, ClientError> {
        Self::decode(send(self.api(Method::POST, "prepare").json(req)).await?).await
    }

    pub async fn done(&self, req: &DoneRequest) -> Result<DoneResponse, ClientError> {
        Self::decode(send(self.api(Method::POST, "done").json(req)).await?).await
    }

    /// Reports a shard copy a read found missing or corrupt; answers
    /// whether the server found it bad.
    pub async fn report(&self, r: &ShardReport) -> Result<bool, ClientError> {
        Self::decode(send(self.api(Method::POST, "report").json(r)).await?).await
    }

    pub async fn layout(&self, path: &str) -> Result<FileLayout, ClientError> {
        Self::decode(send(self.api(Method::GET, "layout").query(&[("path", path)])).await?).await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<TfsEntry>, ClientError> {
        let url = format!(
            "{}/v2/{}/metadata/{}/{}/dir{}",
            self.base,
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        Self::decode(send(self.http.get(url)).await?).await
    }

    pub async fn stat_file(&self, path: &str) -> Result<TfsEntry, ClientError> {
        let url = format!(
            "{}/v2/{}/metadata/{}/{}/file{}",
            self.base,
            self.appkey,
            self.appid,
            self.uid,
            encode_path(path)
        );
        Self::decode(send(self.http.get(url)).await?).await
    }

    pub async fn remove_file(&self, path: &str) -> Result<(), ClientError> {
        Self::checked(send(self.v2(Method::DELETE, "file", path)).await?)
            .await
            .map(drop)
    }

    pub async fn remove_dir(&self, path: &str) -> Result<(), ClientError> {
        Self::checked(send(self.v2(Method::DELETE, "dir", path)).await?)
            .await
            .map(drop)
    }

    pub async fn create_dir(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let r = send(
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
        Self::decode(send(self.api(Method::GET, &format!("fs/{route}")).query(query)).await?).await
    }

    async fn fs_post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::decode(send(self.api(Method::POST, &format!("fs/{route}")).json(body)).await?).await
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

    pub async fn fs_remove(&self, req: &RemoveRequest) -> Result<(), ClientError> {
        self.fs_post("remove", req).await
    }

    pub async fn fs_rename(&self, req: &RenameRequest) -> Result<(), ClientError> {
        self.fs_post("rename", req).await
    }

    pub async fn fs_setattr(&self, req: &SetAttrRequest) -> Result<NodeAttr, ClientError> {
        self.fs_post("setattr", req).await
    }
}
