// Package wecom speaks WeCom's protocol for pendinglink: callback events
// (ParseEvent) and a client for the corpgroup (上下游) APIs that map fans
// and customers to pending_ids, and for the member list of a customer group
// chat (GroupChatMembers), with token caching, bounded retries, typed
// errors and WeCom's quota windows (package quota counts the calls). The
// quota package is the only one of pendinglink's packages it imports.
package wecom
