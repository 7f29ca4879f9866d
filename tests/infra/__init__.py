"""Real services for tests and the demo: Mosquitto (Debian package), Apache Kafka (KRaft), and
kube-apiserver (built from source by scripts/setup) on etcd (Debian package).

Usable from pytest (see ``tests/conftest.py``) and from a shell::

    python -m tests.infra up            # Mosquitto + single-node Kafka until Ctrl-C
    python -m tests.infra up --cluster  # plus the three-broker cluster

Also for fault tests: ``KafkaCluster.single(authorizer=True)`` with :meth:`KafkaCluster.create_acls`
(ACLs through Kafka's own Admin client), and ``tests.infra._tmpfs.tmpfs(size)``, a small real
filesystem (root only) that is always unmounted.

Everything listens on 127.0.0.1 on free ports picked at start, keeps its data in a fresh
directory that is wiped on stop, and is registered (processes and mounts, with the pid of the run
that owns them) so a later run can clean up after a run that was killed.
"""

from tests.infra._kafka import Acl, KafkaCluster, KafkaNode, NodeRole, producer_acls
from tests.infra._kube import KubeApiServer
from tests.infra._mosquitto import Mosquitto
from tests.infra._process import ServiceError

__all__ = [
    "Acl",
    "KafkaCluster",
    "KafkaNode",
    "KubeApiServer",
    "Mosquitto",
    "NodeRole",
    "ServiceError",
    "producer_acls",
]
