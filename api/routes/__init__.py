"""Routes per endpoint group; each is thin: schema in, service call, schema out."""
