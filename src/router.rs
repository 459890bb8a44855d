//! `Router`: channels and actions grouped in a module, mounted together on a node (SocketAPI's
//! `Router` / `include_router`).

use crate::action::ActionDef;
use crate::channel::{Channel, ChannelDef, ChannelRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

/// A set of channels and actions.
///
/// ```
/// use switchboard::{Channel, Router};
/// #[derive(serde::Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// let mut math = Router::new();
/// math.action("add", |p: Add| async move { Ok::<_, String>(p.a + p.b) });
/// let mut app = Router::new();
/// app.merge(math);
/// ```
#[derive(Default)]
pub struct Router {
    pub(crate) channels: Vec<Arc<ChannelDef>>,
    pub(crate) actions: Vec<Arc<ActionDef>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a channel; returns the handle to broadcast on it once the router is mounted.
    pub fn channel<P>(&mut self, channel: Channel<P>) -> ChannelRef<P>
    where
        P: DeserializeOwned + Serialize + Send + 'static,
    {
        let (def, handle) = channel.into_parts();
        self.channels.push(def);
        handle
    }

    /// Declares an action: `func` gets the validated parameters; its result is the reply's `data`,
    /// its error the reply's error text.
    pub fn action<P, F, Fut, T, E>(&mut self, name: impl Into<String>, func: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Display,
    {
        self.actions.push(Arc::new(ActionDef::new(name.into(), func)));
        self
    }

    /// Adds everything declared in `other`.
    pub fn merge(&mut self, other: Router) -> &mut Self {
        self.channels.extend(other.channels);
        self.actions.extend(other.actions);
        self
    }
}
