"""Multi-slice TPU runs (``launch/tpu_vm.py --slices N``, xpk ``--num-slices``): ``jax.make_mesh`` refuses devices
of several slices, so the mesh is a hybrid one whose 'data' axis spans the slices. Checked on the devices of a
2-slice v5e topology that libtpu describes without the hardware (the aot extra)."""
import pytest

from stableaudio_jax.parallel.mesh import make_mesh


@pytest.fixture(scope="module")
def two_slices():
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2", chip_config_name="default",
                                            chips_per_host_bounds=(2, 2, 1), num_slices=2, wrap=(False, False, False))
    assert sorted({d.slice_index for d in topology.devices}) == [0, 1]
    return topology.devices


def test_the_data_axis_spans_the_slices(two_slices):
    mesh = make_mesh({"data": 2, "fsdp": -1}, devices=two_slices)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    slice_of = [[d.slice_index for d in row[:, 0]] for row in mesh.devices]
    assert slice_of == [[0, 0, 0, 0], [1, 1, 1, 1]]  # fsdp gathers stay on one slice's ICI
    mesh = make_mesh({"data": 4, "fsdp": 2}, devices=two_slices)
    assert sorted({d.slice_index for d in mesh.devices[:2].ravel()}) == [0]


def test_a_data_axis_that_cannot_span_the_slices_is_named(two_slices):
    with pytest.raises(ValueError, match=r"on 2 TPU slices: the 'data' axis spans the slices .* mesh.data must be a "
                                         r"multiple of 2, e.g. --config.mesh.data=2"):
        make_mesh({"data": 1, "fsdp": -1}, devices=two_slices)
