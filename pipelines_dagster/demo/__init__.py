"""The embedded default (`make run`): a demo infrastructure-live, an AWS emulator and `dagster dev`, offline.
The parts are shared with the tests: `aws` (the emulator), `terraform` (offline Terraform), `layout` (the demo
repository) and `run` (the command)."""
