"""The reconcile sweep: streams every image the push events missed, fanned out over a Storage queue, resumable across runs."""
