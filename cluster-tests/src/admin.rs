//! The node's admin API as an operator calls it (bearer secret), for the
//! trust-and-safety tests.

use serde_json::Value;

use crate::cluster::Cluster;

/// The operator secret the safety tests configure (`ops-ana`).
pub const OPERATOR_SECRET: &str = "0f8e2b7c9d4a61e5f3b2c8d7e6a5b4c3d2e1f0a9b8c7d6e5";

/// `TURBOCHAT_ADMIN__OPERATORS` with one operator, `ops-ana`.
pub fn operators() -> String {
    format!(r#"[{{name="ops-ana", secret="{OPERATOR_SECRET}"}}]"#)
}

/// The admin API of one node.
pub struct AdminApi {
    base: String,
    http: reqwest::Client,
}

impl AdminApi {
    /// The admin API on node `i`'s operator listener.
    pub fn new(cluster: &Cluster, i: usize) -> Self {
        AdminApi {
            base: format!("http://{}", cluster.nodes[i].addr("http")),
            http: reqwest::Client::new(),
        }
    }

    /// One call, with `secret` as the bearer (none: no header).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("node reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET` as the operator.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(OPERATOR_SECRET), None)
            .await
    }

    /// `POST` as the operator.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(OPERATOR_SECRET),
            Some(body),
        )
        .await
    }

    /// `DELETE` as the operator.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, Some(OPERATOR_SECRET), None)
            .await
    }
}
