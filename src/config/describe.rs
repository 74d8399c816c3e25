//! The effective settings as `rethread check` prints them: one `key = value` line per file key,
//! the keys and their order read from `SettingsArgs` (`catalogue.rs`), each value from
//! `Settings`, secrets redacted (the tenant secret, the store URL's password).

use super::catalogue::file_keys;
use super::*;

impl Settings {
    /// The settings as `key = value` lines, secrets redacted.
    pub fn describe(&self) -> String {
        file_keys()
            .filter_map(|key| Some(format!("{key} = {}\n", self.value_of(&key)?)))
            .collect()
    }

    /// The effective value of the setting with this file key, as `check` shows it; `None` for a
    /// key this does not know (a test keeps every key known).
    pub(super) fn value_of(&self, key: &str) -> Option<String> {
        self.server
            .value_of(key)
            .or_else(|| self.upstream.value_of(key))
            .or_else(|| self.store.value_of(key))
            .or_else(|| self.capture.value_of(key))
            .or_else(|| self.repair.value_of(key))
            .or_else(|| (key == "tenant_secret").then(|| self.tenant_secret_shown().to_owned()))
    }
}

impl Settings {
    fn tenant_secret_shown(&self) -> &'static str {
        match self.tenant_secret {
            Some(_) => "*****",
            None => "(random per process)",
        }
    }
}

impl ServerSettings {
    fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "listen" => self.listen.to_string(),
            "admin_listen" => self
                .admin_listen
                .map_or_else(|| "none (on listen)".to_owned(), |a| a.to_string()),
            "header_timeout" => format!("{:?}", self.header_timeout),
            "drain_timeout" => format!("{:?}", self.drain_timeout),
            "workers" => self.workers.to_string(),
            "otel" => self.otel.to_string(),
            "log_format" => format!("{:?}", self.log_format),
            "log" => self.log.clone(),
            _ => return None,
        })
    }
}

impl UpstreamSettings {
    fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "upstream" => self.url.to_string(),
            "upstream_ca" => self.ca.as_ref().map_or_else(
                || "(system roots only)".to_owned(),
                |p| p.display().to_string(),
            ),
            "connect_timeout" => format!("{:?}", self.connect_timeout),
            "idle_timeout" => format!("{:?}", self.idle_timeout),
            _ => return None,
        })
    }
}

impl StoreSettings {
    fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            // `StoreKind`'s `Debug` redacts a Redis URL's password.
            "store" => format!("{:?}", self.kind),
            "store_prefix" => self.prefix.clone(),
            "store_timeout" => format!("{:?}", self.timeout),
            "store_sync" => format!("{:?}", self.sync),
            "retention" => format!("{:?}", self.retention),
            "capacity" => self.capacity.to_string(),
            "full_items_budget" => self.full_items_budget.to_string(),
            "tenant_full_items_budget" => self.tenant_full_items_budget.to_string(),
            "stateless_image_budget" => self.stateless_image_budget.to_string(),
            "tenant_stateless_image_budget" => self.tenant_stateless_image_budget.to_string(),
            _ => return None,
        })
    }
}

impl CaptureSettings {
    fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "body_limit" => self.body_limit.to_string(),
            "full_item_max" => self.full_item_max.to_string(),
            _ => return None,
        })
    }
}

impl RepairSettings {
    fn value_of(&self, key: &str) -> Option<String> {
        let on = |switch: bool| Some(switch.to_string());
        let rewrites = &self.rewrites;
        match key {
            "repair" => Some(format!("{:?}", self.policy)),
            "mode" => Some(format!("{:?}", self.mode)),
            "fallback_retries" => Some(self.fallback_retries.to_string()),
            "stateless_include" => on(self.stateless_include),
            "non_reasoning_models" => Some(self.non_reasoning_models.to_string()),
            "rewrite_move" => on(rewrites.moves),
            "rewrite_drop" => on(rewrites.drops),
            "rewrite_adopt" => on(rewrites.adopt),
            "rewrite_complete" => on(rewrites.complete),
            "rewrite_exclude" => on(rewrites.exclude),
            "rewrite_sanitise" => on(rewrites.sanitise),
            "rewrite_alias" => on(rewrites.alias),
            "rewrite_restore" => on(rewrites.restore),
            "rewrite_dedupe" => on(rewrites.dedupe),
            "rewrite_expand" => on(rewrites.expand),
            "unanswered_calls" => Some(format!("{:?}", self.unanswered_calls).to_lowercase()),
            "unanswered_call_output" => Some(format!("{:?}", self.unanswered_call_output)),
            _ => None,
        }
    }
}
