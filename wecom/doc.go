// Package wecom speaks WeCom's protocol for pendinglink: callback events
// (ParseEvent) and a client for the corpgroup (上下游) APIs that map fans
// and customers to pending_ids, with token caching, bounded retries, typed
// errors and a quota Limiter. It imports none of pendinglink's packages.
package wecom
