"""Models: backbones, projection head, Barlow Twins loss, classifier, checkpoint formats, export."""
