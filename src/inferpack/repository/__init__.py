"""Model repositories: a folder of models, one sub-folder each (Triton layout).

    <repo>/<model>/model.yaml
    <repo>/<model>/<version>/<artifact>

Object stores (s3://, gs://) will be another implementation of the same interface.
"""

from inferpack.repository.local import LocalRepository, ModelSource

__all__ = ["LocalRepository", "ModelSource"]
