//! Client of the account, package, order and usage routes, and of the
//! store listing the sidecar uses (see `meta::accounts`, `meta::api_store`).

use reqwest::Method;

use super::meta::{ClientError, MetaClient};
use crate::proto::*;

/// `POST {base}/api/account/register`: needs no account.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    resend: bool,
) -> Result<RegisterResponse, ClientError> {
    let req = RegisterRequest {
        email: email.to_string(),
        resend,
    };
    let r = http
        .post(format!("{base}/api/account/register"))
        .json(&req)
        .send()
        .await?;
    MetaClient::decode(r).await
}

/// `POST {base}/api/account/verify`: needs no account.
pub async fn verify(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    code: &str,
) -> Result<AccountCredentials, ClientError> {
    let req = VerifyRequest {
        email: email.to_string(),
        code: code.to_string(),
    };
    let r = http
        .post(format!("{base}/api/account/verify"))
        .json(&req)
        .send()
        .await?;
    MetaClient::decode(r).await
}

impl MetaClient {
    pub async fn register(
        &self,
        email: &str,
        resend: bool,
    ) -> Result<RegisterResponse, ClientError> {
        register(self.http(), self.base(), email, resend).await
    }

    pub async fn verify(&self, email: &str, code: &str) -> Result<AccountCredentials, ClientError> {
        verify(self.http(), self.base(), email, code).await
    }

    pub async fn packages(&self) -> Result<Vec<Package>, ClientError> {
        let r = self
            .send(self.http().get(format!("{}/api/packages", self.base())))
            .await?;
        Self::decode(r).await
    }

    pub async fn package(&self, id: i64) -> Result<Package, ClientError> {
        let r = self
            .send(
                self.http()
                    .get(format!("{}/api/packages/{id}", self.base())),
            )
            .await?;
        Self::decode(r).await
    }

    pub async fn buy(&self, req: &BuyRequest) -> Result<BuyResult, ClientError> {
        Self::decode(
            self.send(self.api(Method::POST, "orders").json(req))
                .await?,
        )
        .await
    }

    pub async fn orders(&self) -> Result<Vec<Order>, ClientError> {
        Self::decode(self.send(self.api(Method::GET, "orders")).await?).await
    }

    pub async fn order(&self, orderid: &str) -> Result<Order, ClientError> {
        let id = crate::client::meta::encode_path(orderid).replace('/', "%2F");
        Self::decode(
            self.send(self.api(Method::GET, &format!("orders/{id}")))
                .await?,
        )
        .await
    }

    pub async fn usage(&self) -> Result<Usage, ClientError> {
        Self::decode(self.send(self.api(Method::GET, "usage")).await?).await
    }

    /// A page of a directory: folders first, then by `sort` (name, size or
    /// modtime).
    pub async fn store_list(
        &self,
        path: &str,
        sort: &str,
        asc: bool,
        limit: u64,
        offset: u64,
    ) -> Result<StorePage, ClientError> {
        let r = self
            .api(Method::GET, "store/list")
            .query(&[("path", path), ("sort", sort)])
            .query(&[("asc", asc)])
            .query(&[("limit", limit), ("offset", offset)])
            .send()
            .await?;
        Self::decode(r).await
    }

    pub async fn store_entry(&self, path: &str) -> Result<StoreEntry, ClientError> {
        let r = self
            .api(Method::GET, "store/entry")
            .query(&[("path", path)])
            .send()
            .await?;
        Self::decode(r).await
    }

    pub async fn remove_tree(&self, path: &str) -> Result<TreeRemoved, ClientError> {
        let req = TreeRequest {
            path: path.to_string(),
        };
        Self::decode(
            self.api(Method::POST, "store/remove_tree")
                .json(&req)
                .send()
                .await?,
        )
        .await
    }
}
