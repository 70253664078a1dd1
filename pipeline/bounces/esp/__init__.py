"""ESP webhooks: what Amazon SES (through SNS), Postmark, Mailgun and SendGrid post about bounces,
complaints and unsubscribes. One module per provider, each a `Provider` (see `base`) that checks a
request is genuine and reads its events; `registry.PROVIDERS` maps each one's name to it, and
`pipeline.web.esp_webhooks` serves them at `POST /webhooks/<name>`."""
