// Package pipeline turns what WeCom tells pendinglink into links: it owns the
// River workers, the Coalescer that batches lookups, the job kinds with their
// queues and priorities, the policy of which jobs follow which write, and the
// webhook notifications.
//
// # From callback to link
//
// The HTTP layer verifies and decrypts a callback and calls
// store.(*DB).SaveEvent. The store asks this package's [Policy] which jobs the
// event needs ([Policy.EventJobs]) and commits the event and those jobs in one
// transaction, so an acknowledged callback always has its work queued:
//
//   - add_external_contact, add_half_external_contact: one [ResolveArgs];
//   - add_member: one [ResolveArgs] per member, with the chat id;
//   - del_external_contact, del_follow_user: one [EndLinkArgs];
//   - anything else is recorded and needs no job.
//
// A resolve job asks the [Coalescer] for the customer's pending_id. The
// Coalescer gathers the asks of concurrent jobs by (corp, chat) and sends up
// to 100 ids in one corpgroup/batch/external_userid_to_pending_id call. The
// answer goes to store.(*DB).RecordResolution, which links the customer to
// every registered fan holding the same live pending_id in the same
// transaction, and writes a link_created notification to the outbox. Right
// after an add WeCom may not know the relationship yet (84061 or no
// pending_id): the job snoozes once for Config.NotCustomerYetDelay and
// records the customer unmatched if the retry finds nothing either.
//
// # From fan to link
//
// [Pipeline.Register] (POST /v1/fans) and [Pipeline.RegisterBatch]
// (/v1/fans/batch, fans import) store the fan and queue it in the fans table;
// the registrar ([Pipeline.RunRegistrar], one per cluster), or the
// interactive call itself when the quota allows one now, turns its
// unionid+openid into a pending_id, and store.(*DB).RecordFanPendingID links
// it to every customer already resolved to that pending_id. Matching thus
// works in both orders: whichever pending_id arrives second finds the first.
// With [Policy.Backfill] a [BackfillArgs] job then asks
// unionid_to_external_userid for customers the dealers already had.
//
// # Periodic work and notifications
//
// [PeriodicJobs] schedules [RenewArgs] (queue fans for re-registration
// before their pending_ids expire) and [PruneArgs] (drop quota
// counters no window counts). With [Policy.Notify], every outbox row gets a
// [NotifyArgs] job that POSTs the link's notifications to the [Webhook] in
// order, signed with HMAC-SHA256.
//
// # Errors
//
// A WeCom rate limit snoozes the job until the window frees, and an answer
// with a Retry-After for that long; -1, any non-200 status, bodies that are
// not a WeCom answer and network errors return to River, which retries with
// backoff; permanent errors (a WeCom errcode) cancel the job and record the reason on the event or fan. Register
// returns [ErrRefused] when WeCom refuses a fan for good, so the HTTP layer
// never sees River's types.
package pipeline
