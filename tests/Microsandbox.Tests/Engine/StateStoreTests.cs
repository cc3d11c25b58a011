using Microsandbox.Engine;

namespace Microsandbox.Tests.Engine;

public sealed class StateStoreTests : IDisposable
{
    private readonly TempHome _temp = new();

    public void Dispose() => _temp.Dispose();

    private static Dictionary<string, string> Map(params (string Key, string Value)[] pairs) =>
        pairs.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);

    [Fact]
    public void A_fresh_home_gets_the_schema_in_WAL_mode()
    {
        Assert.False(File.Exists(_temp.Home.DatabasePath));

        _ = new StateStore(_temp.Home);

        Assert.True(File.Exists(_temp.Home.DatabasePath));
        Assert.Equal(1, _temp.Scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sandboxes'"));
        Assert.Equal(1, _temp.Scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'labels'"));
        Assert.Equal(1, _temp.Scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'labels_by_key'"));
        Assert.Equal(1, _temp.Scalar("SELECT count(*) FROM schema_version"));
        Assert.Equal(1, _temp.Scalar("SELECT version FROM schema_version"));
        using var connection = _temp.OpenDatabase();
        using var mode = connection.CreateCommand();
        mode.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", mode.ExecuteScalar() as string);
    }

    [Fact]
    public void Reopening_a_home_keeps_its_rows_and_one_schema_version()
    {
        var first = new StateStore(_temp.Home);
        Assert.True(first.TryInsert(_temp.NewRecord("kept")));

        var second = new StateStore(new SandboxHome(_temp.Home.Root));

        Assert.Equal("kept", Assert.Single(second.List()).Name);
        Assert.Equal(1, _temp.Scalar("SELECT count(*) FROM schema_version"));
    }

    [Fact]
    public void A_home_of_the_first_schema_gains_the_later_columns_and_keeps_its_rows()
    {
        Directory.CreateDirectory(_temp.Home.Root);
        using (var connection = _temp.OpenDatabase())
        using (var create = connection.CreateCommand())
        {
            // The sandboxes table as the first release wrote it, with one row in it.
            create.CommandText = """
                CREATE TABLE schema_version (version INTEGER NOT NULL);
                INSERT INTO schema_version VALUES (1);
                CREATE TABLE sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image TEXT NOT NULL,
                    cpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, shell TEXT NOT NULL,
                    working_directory TEXT NOT NULL, environment TEXT NOT NULL, created_at TEXT NOT NULL,
                    boot_timeout_ms INTEGER, state TEXT NOT NULL, started_at TEXT, runtime_pid INTEGER,
                    accelerator TEXT, reason TEXT);
                INSERT INTO sandboxes (id, name, image, cpus, memory_mb, shell, working_directory,
                    environment, created_at, state)
                VALUES ('00000000000000aa', 'old', 'default', 1, 512, '/bin/sh', '/', '{}',
                    '2025-01-01T00:00:00.0000000+00:00', 'Stopped');
                """;
            create.ExecuteNonQuery();
        }

        var store = new StateStore(_temp.Home);

        SandboxRecord old = Assert.IsType<SandboxRecord>(store.Find("old"));
        Assert.Null(old.BasePath);
        Assert.Null(old.User);
        Assert.Empty(old.Entrypoint);
        Assert.Empty(old.Cmd);
        Assert.Equal(SandboxState.Stopped, old.State);
        Assert.Equal(4, _temp.Scalar("SELECT count(*) FROM pragma_table_info('sandboxes') "
            + "WHERE name IN ('base_path', 'user_name', 'entrypoint', 'cmd')"));
        Assert.True(store.TryInsert(_temp.NewRecord("new")));
    }

    [Fact]
    public void Insert_then_List_and_Find_round_trip_every_field()
    {
        var store = new StateStore(_temp.Home);
        var created = new DateTimeOffset(2025, 3, 4, 5, 6, 7, TimeSpan.FromHours(2)).AddTicks(1234567);
        var sent = new SandboxRecord
        {
            Id = "0123456789abcdef",
            Name = "round-trip ünïcode",
            Image = "default",
            Cpus = 3,
            MemoryMB = 768,
            Shell = "/bin/ash",
            WorkingDirectory = "/work dir",
            User = "app:staff",
            Entrypoint = ["/docker-entrypoint.sh", "--with space"],
            Cmd = ["serve", ""],
            Environment = Map(("PATH", "/usr/bin:/bin"), ("EMPTY", ""), ("QUOTE", "say \"hi\"\n\u00e9")),
            Labels = Map(("env", "prod"), ("valueless", ""), ("team.name", "a=b")),
            CreatedAt = created,
            BootTimeoutMilliseconds = 45000,
            Directory = "ignored: the store places it",
            State = SandboxState.Created,
        };

        Assert.True(store.TryInsert(sent));
        SandboxRecord listed = Assert.Single(store.List());
        SandboxRecord found = Assert.IsType<SandboxRecord>(store.Find("round-trip ünïcode"));

        foreach (SandboxRecord got in new[] { listed, found })
        {
            Assert.Equal(sent.Id, got.Id);
            Assert.Equal(sent.Name, got.Name);
            Assert.Equal(sent.Image, got.Image);
            Assert.Equal(3, got.Cpus);
            Assert.Equal(768, got.MemoryMB);
            Assert.Equal("/bin/ash", got.Shell);
            Assert.Equal("/work dir", got.WorkingDirectory);
            Assert.Equal("app:staff", got.User);
            Assert.Equal(sent.Entrypoint, got.Entrypoint);
            Assert.Equal(sent.Cmd, got.Cmd);
            Assert.Equal(sent.Environment.OrderBy(p => p.Key), got.Environment.OrderBy(p => p.Key));
            Assert.Equal(sent.Labels.OrderBy(p => p.Key), got.Labels.OrderBy(p => p.Key));
            Assert.Equal("", got.Labels["valueless"]);
            Assert.Equal(created, got.CreatedAt);
            Assert.Equal(created.Ticks, got.CreatedAt.Ticks);
            Assert.Equal(TimeSpan.FromHours(2), got.CreatedAt.Offset);
            Assert.Equal(45000, got.BootTimeoutMilliseconds);
            Assert.Equal(SandboxState.Created, got.State);
            Assert.Null(got.StartedAt);
            Assert.Null(got.RuntimePid);
            Assert.Null(got.Accelerator);
            Assert.Null(got.Reason);
            Assert.Equal(Path.Join(_temp.Home.Root, "sandboxes", sent.Id), got.Directory);
            Assert.Equal(_temp.Home.SandboxDirectory(sent.Id), got.Directory);
        }
    }

    [Fact]
    public void A_disk_image_root_round_trips_its_format_and_partition()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord template = _temp.NewRecord("disk");
        var sent = new SandboxRecord
        {
            Id = template.Id,
            Name = template.Name,
            Image = "/images/root.qcow2",
            BasePath = "/images/root.qcow2",
            RootFormat = DiskImageFormat.Qcow2,
            RootPartition = 2,
            Shell = template.Shell,
            WorkingDirectory = template.WorkingDirectory,
            Environment = template.Environment,
            Labels = template.Labels,
            Directory = template.Directory,
        };

        Assert.True(store.TryInsert(sent));
        Assert.True(store.TryInsert(_temp.NewRecord("layered")));

        SandboxRecord disk = Assert.IsType<SandboxRecord>(store.Find("disk"));
        SandboxRecord layered = Assert.IsType<SandboxRecord>(store.Find("layered"));
        Assert.Equal((DiskImageFormat.Qcow2, 2), (disk.RootFormat, disk.RootPartition));
        Assert.Null(layered.RootFormat);
        Assert.Null(layered.RootPartition);
    }

    [Fact]
    public void A_home_from_before_disk_images_gets_the_root_columns_and_keeps_its_rows()
    {
        var store = new StateStore(_temp.Home);
        Assert.True(store.TryInsert(_temp.NewRecord("older")));
        _temp.Scalar("ALTER TABLE sandboxes DROP COLUMN root_format");
        _temp.Scalar("ALTER TABLE sandboxes DROP COLUMN root_partition");

        var reopened = new StateStore(new SandboxHome(_temp.Home.Root));

        Assert.Null(Assert.IsType<SandboxRecord>(reopened.Find("older")).RootFormat);
        Assert.Equal(1, _temp.Scalar(
            "SELECT count(*) FROM pragma_table_info('sandboxes') WHERE name = 'root_partition'"));
    }

    [Fact]
    public void Nullable_fields_and_empty_collections_round_trip_as_empty()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord sent = _temp.NewRecord("bare");

        Assert.True(store.TryInsert(sent));
        SandboxRecord got = Assert.IsType<SandboxRecord>(store.Find("bare"));

        Assert.Null(got.BootTimeoutMilliseconds);
        Assert.Null(got.User);
        Assert.Empty(got.Entrypoint);
        Assert.Empty(got.Cmd);
        Assert.Empty(got.Labels);
        Assert.Empty(got.Environment);
        Assert.Equal(0, _temp.Scalar("SELECT count(*) FROM labels"));
    }

    [Fact]
    public void Find_is_exact_and_case_sensitive_and_List_is_ordered_by_name()
    {
        var store = new StateStore(_temp.Home);
        foreach (string name in new[] { "beta", "Box", "alpha", "box" })
        {
            Assert.True(store.TryInsert(_temp.NewRecord(name)));
        }

        Assert.Equal(["Box", "alpha", "beta", "box"], store.List().Select(r => r.Name));
        Assert.Equal("Box", store.Find("Box")?.Name);
        Assert.Equal("box", store.Find("box")?.Name);
        Assert.NotEqual(store.Find("Box")?.Id, store.Find("box")?.Id);
        Assert.Null(store.Find("BOX"));
        Assert.Null(store.Find("alph"));
    }

    [Fact]
    public void Inserting_a_taken_name_returns_false_and_leaves_the_first_intact()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord first = _temp.NewRecord("dup", Map(("owner", "first")));
        SandboxRecord second = _temp.NewRecord("dup", Map(("owner", "second"), ("extra", "x")));

        Assert.True(store.TryInsert(first));
        Assert.False(store.TryInsert(second));

        SandboxRecord got = Assert.Single(store.List());
        Assert.Equal(first.Id, got.Id);
        Assert.Equal("first", got.Labels["owner"]);
        Assert.Single(got.Labels);
        Assert.Equal(1, _temp.Scalar("SELECT count(*) FROM labels"));
        Assert.Equal(0, _temp.Scalar($"SELECT count(*) FROM sandboxes WHERE id = '{second.Id}'"));
    }

    [Fact]
    public void UpdateState_persists_state_pid_accelerator_reason_and_start_time()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("upd");
        Assert.True(store.TryInsert(record));
        var started = new DateTimeOffset(2025, 6, 7, 8, 9, 10, TimeSpan.Zero).AddTicks(42);

        record.State = SandboxState.Crashed;
        record.RuntimePid = 4242;
        record.Accelerator = "tcg";
        record.Reason = "Kernel panic - not syncing";
        record.StartedAt = started;
        store.UpdateState(record);

        SandboxRecord got = Assert.IsType<SandboxRecord>(new StateStore(_temp.Home).Find("upd"));
        Assert.Equal(SandboxState.Crashed, got.State);
        Assert.Equal(4242, got.RuntimePid);
        Assert.Equal("tcg", got.Accelerator);
        Assert.Equal("Kernel panic - not syncing", got.Reason);
        Assert.Equal(started, got.StartedAt);

        record.State = SandboxState.Stopped;
        record.RuntimePid = null;
        record.Reason = null;
        store.UpdateState(record);

        got = Assert.IsType<SandboxRecord>(store.Find("upd"));
        Assert.Equal(SandboxState.Stopped, got.State);
        Assert.Null(got.RuntimePid);
        Assert.Null(got.Reason);
        Assert.Equal("tcg", got.Accelerator);
        Assert.Equal(started, got.StartedAt);
    }

    [Fact]
    public void TryUpdateState_writes_only_over_the_state_and_pid_it_read()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("cas");
        Assert.True(store.TryInsert(record));
        record.State = SandboxState.Running;
        record.RuntimePid = 100;
        store.UpdateState(record);

        // Another process restarted the sandbox after this reader saw runtime 100.
        SandboxRecord restarted = Assert.IsType<SandboxRecord>(store.FindById(record.Id));
        restarted.State = SandboxState.Starting;
        restarted.RuntimePid = 200;
        store.UpdateState(restarted);

        record.State = SandboxState.Crashed;
        record.RuntimePid = null;
        record.Reason = "runtime 100 is gone";
        Assert.False(store.TryUpdateState(record, SandboxState.Running, 100));
        SandboxRecord stored = Assert.IsType<SandboxRecord>(store.Find("cas"));
        Assert.Equal(SandboxState.Starting, stored.State);
        Assert.Equal(200, stored.RuntimePid);
        Assert.Null(stored.Reason);

        // What was read is what is stored: the write goes through, a null pid compared as null.
        Assert.True(store.TryUpdateState(record, SandboxState.Starting, 200));
        Assert.True(store.TryUpdateState(record, SandboxState.Crashed, null));
        Assert.Equal("runtime 100 is gone", store.Find("cas")?.Reason);
        Assert.Null(store.FindById("no-such-id"));
    }

    [Fact]
    public void Delete_removes_the_row_and_cascades_to_its_labels_only()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord gone = _temp.NewRecord("gone", Map(("a", "1"), ("b", "")));
        SandboxRecord kept = _temp.NewRecord("kept", Map(("a", "1")));
        Assert.True(store.TryInsert(gone));
        Assert.True(store.TryInsert(kept));
        Assert.Equal(3, _temp.Scalar("SELECT count(*) FROM labels"));

        store.Delete(gone.Id);

        Assert.Null(store.Find("gone"));
        Assert.Equal(0, _temp.Scalar($"SELECT count(*) FROM labels WHERE sandbox_id = '{gone.Id}'"));
        Assert.Equal(1, _temp.Scalar($"SELECT count(*) FROM labels WHERE sandbox_id = '{kept.Id}'"));
        Assert.Equal("1", store.Find("kept")?.Labels["a"]);

        // The name is free again.
        Assert.True(store.TryInsert(_temp.NewRecord("gone")));
    }

    [Fact]
    public void Two_stores_on_one_home_see_each_others_writes()
    {
        var a = new StateStore(_temp.Home);
        var b = new StateStore(new SandboxHome(_temp.Home.Root));
        SandboxRecord record = _temp.NewRecord("shared", Map(("k", "v")));

        Assert.True(a.TryInsert(record));
        SandboxRecord seen = Assert.IsType<SandboxRecord>(b.Find("shared"));
        Assert.Equal(record.Id, seen.Id);
        Assert.Equal("v", seen.Labels["k"]);
        Assert.False(b.TryInsert(_temp.NewRecord("shared")));

        seen.State = SandboxState.Running;
        seen.RuntimePid = 99;
        b.UpdateState(seen);
        Assert.Equal(SandboxState.Running, a.Find("shared")?.State);
        Assert.Equal(99, a.Find("shared")?.RuntimePid);

        a.Delete(record.Id);
        Assert.Null(b.Find("shared"));
        Assert.Empty(b.List());
    }

    [Fact]
    public async Task Eight_stores_racing_for_one_name_yield_exactly_one_winner()
    {
        const int racers = 8;
        using var gate = new Barrier(racers);
        // Dedicated threads: the barrier would starve a two-core thread pool.
        var tasks = Enumerable.Range(0, racers).Select(i => Task.Factory.StartNew(() =>
        {
            // Each racer opens the fresh home itself, as a separate process would.
            var store = new StateStore(new SandboxHome(_temp.Home.Root));
            SandboxRecord record = _temp.NewRecord("contested", Map(("racer", i.ToString(
                System.Globalization.CultureInfo.InvariantCulture))));
            gate.SignalAndWait();
            return (Won: store.TryInsert(record), record.Id);
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToList();

        var results = await Task.WhenAll(tasks);

        var winner = Assert.Single(results, r => r.Won);
        SandboxRecord row = Assert.Single(new StateStore(_temp.Home).List());
        Assert.Equal(winner.Id, row.Id);
        Assert.Single(row.Labels);
        Assert.Equal(1, _temp.Scalar("SELECT count(*) FROM labels"));
    }

    [Fact]
    public async Task Fifty_parallel_inserts_of_distinct_names_all_land()
    {
        const int count = 50;
        var tasks = Enumerable.Range(0, count).Select(i => Task.Run(() =>
        {
            var store = new StateStore(new SandboxHome(_temp.Home.Root));
            string name = "box-" + i.ToString("D2", System.Globalization.CultureInfo.InvariantCulture);
            return store.TryInsert(_temp.NewRecord(name, Map(("index", name))));
        })).ToList();

        bool[] results = await Task.WhenAll(tasks);

        Assert.All(results, Assert.True);
        IReadOnlyList<SandboxRecord> rows = new StateStore(_temp.Home).List();
        Assert.Equal(
            Enumerable.Range(0, count).Select(i => "box-" + i.ToString("D2", System.Globalization.CultureInfo.InvariantCulture)),
            rows.Select(r => r.Name));
        Assert.All(rows, r => Assert.Equal(r.Name, r.Labels["index"]));
        Assert.Equal(count, _temp.Scalar("SELECT count(*) FROM labels"));
    }

    [Fact]
    public void A_database_from_a_newer_schema_is_refused()
    {
        _ = new StateStore(_temp.Home);
        using (var connection = _temp.OpenDatabase())
        using (var bump = connection.CreateCommand())
        {
            bump.CommandText = "UPDATE schema_version SET version = 2";
            Assert.Equal(1, bump.ExecuteNonQuery());
        }

        var ex = Assert.Throws<SandboxException>(() => new StateStore(_temp.Home));

        Assert.Equal("StateStoreTooNew", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.ResourceUnavailable, ex.Kind);
        Assert.Equal(_temp.Home.DatabasePath, ex.Target);
        Assert.Contains("schema 2", ex.Message, StringComparison.Ordinal);
    }
}
