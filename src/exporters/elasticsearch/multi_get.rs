//! One `_mget` of documents by id, as the orders index and the monitor state read theirs: real
//! time, with each document's version for a conditional write.

use bytes::Bytes;
use elasticsearch::http::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::error::EsError;
use super::service::EsClient;

#[derive(Deserialize)]
#[serde(bound = "S: DeserializeOwned")]
struct MultiGet<S> {
    docs: Vec<Found<S>>,
}

/// One document of an `_mget` reply.
#[derive(Deserialize)]
#[serde(bound = "S: DeserializeOwned")]
pub struct Found<S> {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub found: bool,
    #[serde(rename = "_seq_no")]
    pub seq_no: Option<u64>,
    #[serde(rename = "_primary_term")]
    pub primary_term: Option<u64>,
    #[serde(rename = "_source")]
    pub source: Option<S>,
    pub error: Option<Value>,
}

/// The documents of `index` with these ids; `what` names them in errors ("reading {what}: ...").
pub async fn multi_get<S: DeserializeOwned>(
    client: &EsClient,
    index: &str,
    ids: impl IntoIterator<Item = &String>,
    what: &str,
) -> Result<Vec<Found<S>>, EsError> {
    let docs: Vec<Value> = ids.into_iter().map(|id| serde_json::json!({"_index": index, "_id": id})).collect();
    let body = Bytes::from(serde_json::json!({"docs": docs}).to_string());
    let reply = client.request(Method::Post, "/_mget", Some(body), "application/json").await?;
    if !(200..300).contains(&reply.status) {
        return Err(EsError::Status {
            what: format!("reading {what}"),
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        });
    }
    let found: MultiGet<S> =
        serde_json::from_slice(&reply.body).map_err(|source| EsError::Unreadable { what: format!("reading {what}"), source })?;
    Ok(found.docs)
}
