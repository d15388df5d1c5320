"""Root test configuration: every test directory gets the infrastructure fixtures."""

pytest_plugins = ["offsync_stack.testing", "offsync_stack.browser"]
