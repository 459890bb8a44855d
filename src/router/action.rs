//! Actions: named request/response calls with typed, validated parameters.

use super::params::{from_params, InvalidParams};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::future::Future;

type ActionFn = Box<dyn Fn(Value) -> Result<BoxFuture<'static, Result<Value, String>>, InvalidParams> + Send + Sync>;

/// A declared action, with its parameter type erased.
pub(crate) struct ActionDef {
    pub name: String,
    call: ActionFn,
}

impl ActionDef {
    /// The action `name` calling `func` with the validated parameters.
    pub fn new<P, F, Fut, T, E>(name: String, func: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Display,
    {
        let call = move |params: Value| -> Result<BoxFuture<'static, Result<Value, String>>, InvalidParams> {
            let fut = func(from_params(params)?);
            Ok(async move {
                let result = fut.await.map_err(|err| err.to_string())?;
                serde_json::to_value(result).map_err(|e| format!("could not serialize result: {e}"))
            }
            .boxed())
        };
        Self {
            name,
            call: Box::new(call),
        }
    }

    /// Validates `params` (a missing `data` counts as `{}`) and returns the call to await.
    pub fn call(&self, params: Option<Value>) -> Result<BoxFuture<'static, Result<Value, String>>, InvalidParams> {
        let params = match params {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(params) => params,
        };
        (self.call)(params)
    }
}
