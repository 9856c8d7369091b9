"""The embedded default (`make run`): a demo infrastructure-live, an AWS emulator and `dagster dev`, offline.
The parts are shared with the tests: `aws` (the emulator and its saved states), `terraform` (offline Terraform),
`layout` (the demo repository), `lock` (one demo per folder), `terminal` (what the terminal shows) and `run`
(the command)."""
