"""The bench's report, without VMs: the restore breakdown is the median of each phase, and the
table names both RAM paths."""

from harness.bench import CONTRACT_KEYS, RestoreSeries, render


def test_breakdown_is_the_median_of_each_phase():
    series = RestoreSeries("r", phases=[{"qemu_start": 0.2, "state_load": 0.05, "first_ssh": 0.4},
                                        {"qemu_start": 0.3, "state_load": 0.07, "first_ssh": 0.9},
                                        {"qemu_start": 0.1, "state_load": 0.06, "first_ssh": 0.5}])
    assert series.breakdown() == {"qemu_start_s": 0.2, "state_load_s": 0.06, "first_ssh_s": 0.5}


def test_table_shows_both_restore_paths_and_the_many_guest_figures():
    result = {"accel": "tcg", "cpus": 2, "memory_mib": 1024, "restore_ready_s": 0.6, "restore_ready_all_s": [0.6],
              "restore_streamed_s": 1.7, "restore_streamed_all_s": [1.7], "restore_breakdown": {"cont_s": 0.01},
              "rss_1_restored_mib": 200.0, "rss_4_restored_mib": 280.0, "density_ratio": 1.4,
              "idle_cpu_pct_1": 2.5, "libvirt_cold_boot_s": None}
    text = render(result)
    assert "shared RAM image" in text and "RAM streamed, old" in text and "cont 0.01" in text
    assert "4 guests / 1 guest (shared RAM)" in text and "libvirt" not in text
    assert {"restore_ready_s", "restore_breakdown", "rss_1_restored_mib", "rss_4_restored_mib", "idle_cpu_pct_1",
            "idle_cpu_pct_4", "daemon_reaction_guest_s", "libvirt_cold_boot_s"} <= set(CONTRACT_KEYS)
