//! What the notifier reads: the delivery recorded on the object, from the API server (not the
//! cache), so a reconcile on a stale cached object does not notify twice.

use kube::Api;
use serde::de::DeserializeOwned;

use super::notice::Notified;
use crate::api::NotificationStatus;

/// The recorded delivery of `name`'s outcome, as the API server has it now.
pub async fn recorded<K>(
    api: &Api<K>,
    name: &str,
) -> Result<Option<NotificationStatus>, kube::Error>
where
    K: Notified + kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_status(name).await?.notification())
}
