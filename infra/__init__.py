"""CDK app of Overseer for AWS: one stack that composes one construct per concern."""
