-- The database ceiling of `npm run bench`: the two statements the service sends for one new charge (with no
-- rate limit, and a key the api has seen live: the claim checks it), as it sends them (src/idempotency,
-- src/accounts, src/payments), with no HTTP, no Node and no processor around them. Run by pgbench -M
-- prepared with -D account_id=... -D key_hash=...; pgbench variables are written :name, and in prepared
-- mode each one is sent as a parameter, as the service does (it prepares its statements too).

-- (A space follows every colon inside the JSON literals: pgbench would read `:name` as a variable.)

-- 1. Claim the key and record the intent (the pending charge) in one statement, if the API key is live.
with claimed as (
  insert into idempotency_keys
    (id, account_id, key, request_method, request_path, request_fingerprint, request_body,
     recovery_point, locked_at, lease_token, expires_at)
  select gen_random_uuid(), :account_id, gen_random_uuid()::text, 'POST', '/v1/charges',
         md5(random()::text), '{"amount": 1000,"currency": "usd","source": "tok_visa"}'::jsonb,
         'intent_recorded', now(), gen_random_uuid(), now() + make_interval(secs => 86400)
  where true and exists (
    select 1 from api_keys where secret_hash = :key_hash and account_id = :account_id and revoked_at is null)
  on conflict (account_id, key) do nothing
  returning id, account_id, key, request_method, request_path, request_fingerprint,
            recovery_point, response_status, response_body, response_headers, lease_token
), intent as (
  insert into charges (id, account_id, idempotency_key_id, amount, currency, source, description, metadata,
                       status, processor_idempotency_key)
  select 'ch_' || substr(md5(random()::text), 1, 16), claimed.account_id, claimed.id, 1000::bigint, 'usd',
         'tok_visa', null::text, '{}'::jsonb, 'pending', 'charge_' || claimed.id
  from claimed
  returning *
)
select claimed.id as key_id, claimed.lease_token, (select id from intent) as charge_id,
       true as claimed, false as expired, true as leased, (select row_to_json(intent) from intent) as intent
from claimed
union all
select k.id, k.lease_token, null, false, k.expires_at <= now(),
       k.locked_at is not null and k.locked_at > now() - make_interval(secs => 60), null
from idempotency_keys k
where k.account_id = :account_id and k.key = 'no such key' and exists (
  select 1 from api_keys where secret_hash = :key_hash and account_id = :account_id and revoked_at is null)
\gset

-- 2. Record the processor's answer, its event (with a delivery and its job for each endpoint that wants it:
--    none here), and finish the key with the stored response, in one statement.
with change as (
  update charges
  set status = 'succeeded', processor_reference = 'pr_' || :charge_id, failure_code = null,
      failure_message = null, reconcile_since = null, updated_at = now()
  where id = :charge_id and status = 'pending'
    and exists (select 1 from idempotency_keys h
                where h.id = :key_id and h.lease_token = :lease_token and h.recovery_point <> 'finished')
    and not exists (select 1 from charges other
                    where other.processor_reference = 'pr_' || :charge_id and other.id <> :charge_id)
  returning id
), event as (
  insert into events (id, account_id, type, data)
  select 'evt_' || substr(md5(random()::text), 1, 16), :account_id, 'charge.succeeded',
         '{"id": "ch_x","object": "charge","amount": 1000,"currency": "usd","status": "succeeded","amount_refunded": 0,"refunded": false,"description": null,"metadata": {},"failure_code": null,"failure_message": null,"processor_reference": "pr_x","created": "2026-11-29T00:00:00.000Z"}'::jsonb
  where exists (select 1 from change)
  returning id, account_id, type
), deliveries as (
  insert into webhook_deliveries (event_id, endpoint_id, account_id, window_ends_at)
  select event.id, w.id, event.account_id, now() + make_interval(secs => 259200)
  from event
  join webhook_endpoints w on w.account_id = event.account_id and w.status = 'enabled'
    and w.enabled_events && array[event.type, '*']
  for key share of w
  returning id, next_attempt_at, attempts
), delivery_jobs as (
  insert into pgboss.job
    (name, data, singleton_key, start_after, retry_limit, retry_delay, retry_backoff, retry_delay_max,
     expire_seconds, deletion_seconds, keep_until, policy, dead_letter)
  select q.name, jsonb_build_object('delivery', d.id, 'attempt', d.attempts + 1), d.id::text, d.next_attempt_at,
         q.retry_limit, q.retry_delay, q.retry_backoff, q.retry_delay_max, q.expire_seconds, q.deletion_seconds,
         d.next_attempt_at + make_interval(secs => q.retention_seconds), q.policy, q.dead_letter
  from deliveries d join pgboss.queue q on q.name = 'webhook'
), finished as (
  update idempotency_keys
  set recovery_point = 'finished', locked_at = null, lease_token = null, response_status = 201,
      response_body = '{"id": "ch_x","object": "charge","amount": 1000,"currency": "usd","status": "succeeded","amount_refunded": 0,"refunded": false,"description": null,"metadata": {},"failure_code": null,"failure_message": null,"processor_reference": "pr_x","created": "2026-11-29T00:00:00.000Z"}',
      response_headers = '{"Content-Type": "application/json","Location": "/v1/charges/ch_x"}'
  where id = :key_id and lease_token = :lease_token and recovery_point <> 'finished'
    and exists (select 1 from change)
  returning id
)
select count(*)::int as finished from finished;
