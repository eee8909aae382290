"""Load generation: the generated world, its event and send streams, the demo's scenario."""
