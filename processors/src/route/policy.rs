//! The send rules, checked again right before the BSP call: the send API checked them
//! on acceptance, but a scheduled, retried or parked send can outlive what made it
//! acceptable. A refused send ends `send failed` with the rule's code, without a call.
//!
//! - a free-form message needs an open customer-service window (`db::conversations`),
//!   unless the tenant turned the check off;
//! - a marketing template (by the synced copy of its WABA's templates) does not go to a
//!   customer who stopped marketing messages (`db::suppressions`).

use serde_json::Value;
use switchboard_connectors::send::codes;
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::SendRequest;

use super::dispatch::{SendRouter, Stop};
use crate::db::conversations;

impl SendRouter {
    /// The rule a send breaks now, if any: (code, why).
    pub(super) async fn refusal(
        &self,
        req: &SendRequest,
        number: &BusinessNumber,
    ) -> Result<Option<(&'static str, String)>, Stop> {
        if req.message_type == "template" {
            return self.opted_out(req, number).await;
        }
        let enforced = self
            .cache
            .read()
            .tenants
            .get(&req.tenant_id)
            .is_none_or(|t| t.enforce_service_window);
        if !enforced {
            return Ok(None);
        }
        let pair = [(req.from_number.clone(), req.to.clone())];
        let windows = self
            .durable("read the customer-service window", || async {
                Ok(self.conversations.windows(&pair).await?)
            })
            .await?;
        let expires = windows.get(&pair[0]).copied();
        let why = conversations::refusal(&req.message_type, expires, switchboard_runtime::now_ms());
        Ok(why.map(|w| (conversations::OUTSIDE_SERVICE_WINDOW, w)))
    }

    async fn opted_out(
        &self,
        req: &SendRequest,
        number: &BusinessNumber,
    ) -> Result<Option<(&'static str, String)>, Stop> {
        let Some(waba) = &number.waba_id else {
            return Ok(None);
        };
        let msg: Value = serde_json::from_str(&req.message).unwrap_or(Value::Null);
        let (Some(name), Some(lang)) = (
            msg.pointer("/template/name").and_then(Value::as_str),
            msg.pointer("/template/language/code")
                .and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let template = self
            .durable("read the template", || async {
                Ok(self
                    .templates
                    .find(&req.tenant_id, waba, name, lang)
                    .await?)
            })
            .await?;
        if !template.is_some_and(|t| t.is_marketing()) {
            return Ok(None);
        }
        let to = [req.to.clone()];
        let stopped = self
            .durable("read the opt-outs", || async {
                Ok(self.suppressions.suppressed(&req.tenant_id, &to).await?)
            })
            .await?;
        Ok(stopped.contains(&req.to).then(|| {
            (
                codes::CUSTOMER_OPTED_OUT,
                format!("{} stopped marketing messages from this business", req.to),
            )
        }))
    }
}
