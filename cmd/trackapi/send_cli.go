package main

// sendCmd hands its arguments to the importer's own flag parsing.
type sendCmd struct {
	Args []string `arg:"" optional:"" passthrough:"" help:"--url URL --site S --token K [--failed F] FILE|-"`
}

func (c *sendCmd) Run(env *runEnv) error {
	return sendCommand(env.ctx, c.Args, env.stdout, env.stderr)
}
