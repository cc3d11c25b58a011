using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Sqlite;

namespace Microsandbox.Engine;

/// <summary>
/// The SQLite database under the home. Every call opens its own connection, so any number of
/// processes may use it at once; WAL and a busy timeout let them take turns without corruption.
/// </summary>
internal sealed class StateStore
{
    private const int SchemaVersion = 1;

    // Nullable columns that came after the first schema, in the order they came, with their types.
    private static readonly string[] AddedColumns =
    [
        "base_path TEXT", "user_name TEXT", "entrypoint TEXT", "cmd TEXT", "root_format TEXT",
        "root_partition INTEGER", "max_duration_ms INTEGER", "idle_timeout_ms INTEGER", "attached_pid INTEGER",
    ];
    private readonly string _connectionString;
    private readonly string _home;

    public StateStore(SandboxHome home)
    {
        _home = home.Root;
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = home.DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
            DefaultTimeout = 30,
        }.ToString();
        using var connection = Open();
        Execute(connection, """
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS sandboxes (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                image TEXT NOT NULL,
                cpus INTEGER NOT NULL,
                memory_mb INTEGER NOT NULL,
                shell TEXT NOT NULL,
                working_directory TEXT NOT NULL,
                environment TEXT NOT NULL,
                created_at TEXT NOT NULL,
                boot_timeout_ms INTEGER,
                state TEXT NOT NULL,
                started_at TEXT,
                runtime_pid INTEGER,
                accelerator TEXT,
                reason TEXT);
            CREATE TABLE IF NOT EXISTS labels (
                sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (sandbox_id, key));
            CREATE INDEX IF NOT EXISTS labels_by_key ON labels(key, value);
            """);

        // Check and insert as one writer, so two processes opening a new home record one version.
        using var transaction = connection.BeginTransaction(deferred: false);
        using var version = connection.CreateCommand();
        version.CommandText = "SELECT version FROM schema_version";
        object? found = version.ExecuteScalar();
        if (found is null)
        {
            Execute(connection, $"INSERT INTO schema_version VALUES ({SchemaVersion})");
        }
        else if (Convert.ToInt32(found, CultureInfo.InvariantCulture) > SchemaVersion)
        {
            throw new SandboxException("StateStoreTooNew", SandboxErrorKind.ResourceUnavailable,
                $"The state database was written by a newer Microsandbox (schema {found}); update the module.",
                home.DatabasePath);
        }

        // Columns added after the first schema, added in place so existing homes keep working.
        foreach (string column in AddedColumns)
        {
            using var columns = connection.CreateCommand();
            columns.CommandText = "SELECT COUNT(*) FROM pragma_table_info('sandboxes') WHERE name = $name";
            columns.Parameters.AddWithValue("$name", column[..column.IndexOf(' ', StringComparison.Ordinal)]);
            if (Convert.ToInt32(columns.ExecuteScalar(), CultureInfo.InvariantCulture) == 0)
            {
                Execute(connection, $"ALTER TABLE sandboxes ADD COLUMN {column}");
            }
        }

        transaction.Commit();
    }

    /// <summary>Inserts a new sandbox; false when the name is taken.</summary>
    public bool TryInsert(SandboxRecord record)
    {
        using var connection = Open();
        using var transaction = connection.BeginTransaction();
        using var insert = connection.CreateCommand();
        insert.CommandText = """
            INSERT INTO sandboxes (id, name, image, cpus, memory_mb, shell, working_directory, environment,
                created_at, boot_timeout_ms, state, base_path, user_name, entrypoint, cmd, root_format,
                root_partition, max_duration_ms, idle_timeout_ms)
            VALUES ($id, $name, $image, $cpus, $memory, $shell, $cwd, $env, $created, $boot, $state, $base,
                $user, $entrypoint, $cmd, $rootFormat, $rootPartition, $maxDuration, $idleTimeout)
            ON CONFLICT(name) DO NOTHING
            """;
        insert.Parameters.AddWithValue("$id", record.Id);
        insert.Parameters.AddWithValue("$name", record.Name);
        insert.Parameters.AddWithValue("$image", record.Image);
        insert.Parameters.AddWithValue("$cpus", record.Cpus);
        insert.Parameters.AddWithValue("$memory", record.MemoryMB);
        insert.Parameters.AddWithValue("$shell", record.Shell);
        insert.Parameters.AddWithValue("$cwd", record.WorkingDirectory);
        insert.Parameters.AddWithValue("$env", JsonSerializer.Serialize(record.Environment));
        insert.Parameters.AddWithValue("$created", record.CreatedAt.ToString("O", CultureInfo.InvariantCulture));
        insert.Parameters.AddWithValue("$boot", (object?)record.BootTimeoutMilliseconds ?? DBNull.Value);
        insert.Parameters.AddWithValue("$state", record.State.ToString());
        insert.Parameters.AddWithValue("$base", (object?)record.BasePath ?? DBNull.Value);
        insert.Parameters.AddWithValue("$user", (object?)record.User ?? DBNull.Value);
        insert.Parameters.AddWithValue("$entrypoint", JsonSerializer.Serialize(record.Entrypoint));
        insert.Parameters.AddWithValue("$cmd", JsonSerializer.Serialize(record.Cmd));
        insert.Parameters.AddWithValue("$rootFormat", (object?)record.RootFormat?.ToString() ?? DBNull.Value);
        insert.Parameters.AddWithValue("$rootPartition", (object?)record.RootPartition ?? DBNull.Value);
        insert.Parameters.AddWithValue("$maxDuration", (object?)record.MaxDurationMilliseconds ?? DBNull.Value);
        insert.Parameters.AddWithValue("$idleTimeout", (object?)record.IdleTimeoutMilliseconds ?? DBNull.Value);
        if (insert.ExecuteNonQuery() == 0)
        {
            return false;
        }

        foreach (var (key, value) in record.Labels)
        {
            using var label = connection.CreateCommand();
            label.CommandText = "INSERT INTO labels (sandbox_id, key, value) VALUES ($id, $key, $value)";
            label.Parameters.AddWithValue("$id", record.Id);
            label.Parameters.AddWithValue("$key", key);
            label.Parameters.AddWithValue("$value", value);
            label.ExecuteNonQuery();
        }

        transaction.Commit();
        return true;
    }

    /// <summary>All sandboxes, ordered by name.</summary>
    public IReadOnlyList<SandboxRecord> List()
    {
        using var connection = Open();
        var labels = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        using (var query = connection.CreateCommand())
        {
            query.CommandText = "SELECT sandbox_id, key, value FROM labels";
            using var reader = query.ExecuteReader();
            while (reader.Read())
            {
                string id = reader.GetString(0);
                if (!labels.TryGetValue(id, out var set))
                {
                    labels[id] = set = new Dictionary<string, string>(StringComparer.Ordinal);
                }

                set[reader.GetString(1)] = reader.GetString(2);
            }
        }

        var records = new List<SandboxRecord>();
        using (var query = connection.CreateCommand())
        {
            query.CommandText = """
                SELECT id, name, image, cpus, memory_mb, shell, working_directory, environment, created_at,
                    boot_timeout_ms, state, started_at, runtime_pid, accelerator, reason, base_path,
                    user_name, entrypoint, cmd, root_format, root_partition, max_duration_ms, idle_timeout_ms,
                    attached_pid
                FROM sandboxes ORDER BY name
                """;
            using var reader = query.ExecuteReader();
            while (reader.Read())
            {
                string id = reader.GetString(0);
                records.Add(new SandboxRecord
                {
                    Id = id,
                    Name = reader.GetString(1),
                    Image = reader.GetString(2),
                    Cpus = reader.GetInt32(3),
                    MemoryMB = reader.GetInt32(4),
                    Shell = reader.GetString(5),
                    WorkingDirectory = reader.GetString(6),
                    Environment = JsonSerializer.Deserialize<Dictionary<string, string>>(reader.GetString(7)) ?? [],
                    CreatedAt = DateTimeOffset.Parse(reader.GetString(8), CultureInfo.InvariantCulture),
                    BootTimeoutMilliseconds = reader.IsDBNull(9) ? null : reader.GetInt32(9),
                    State = Enum.Parse<SandboxState>(reader.GetString(10)),
                    StartedAt = reader.IsDBNull(11)
                        ? null : DateTimeOffset.Parse(reader.GetString(11), CultureInfo.InvariantCulture),
                    RuntimePid = reader.IsDBNull(12) ? null : reader.GetInt32(12),
                    Accelerator = reader.IsDBNull(13) ? null : reader.GetString(13),
                    Reason = reader.IsDBNull(14) ? null : reader.GetString(14),
                    BasePath = reader.IsDBNull(15) ? null : reader.GetString(15),
                    User = reader.IsDBNull(16) ? null : reader.GetString(16),
                    Entrypoint = ReadList(reader, 17),
                    Cmd = ReadList(reader, 18),
                    RootFormat = reader.IsDBNull(19) ? null : Enum.Parse<DiskImageFormat>(reader.GetString(19)),
                    RootPartition = reader.IsDBNull(20) ? null : reader.GetInt32(20),
                    MaxDurationMilliseconds = reader.IsDBNull(21) ? null : reader.GetInt64(21),
                    IdleTimeoutMilliseconds = reader.IsDBNull(22) ? null : reader.GetInt64(22),
                    AttachedPid = reader.IsDBNull(23) ? null : reader.GetInt32(23),
                    Labels = labels.TryGetValue(id, out var set) ? set : new Dictionary<string, string>(),
                    Directory = Path.Join(_home, "sandboxes", id),
                });
            }
        }

        return records;
    }

    /// <summary>One sandbox by exact name, or null.</summary>
    public SandboxRecord? Find(string name) =>
        List().FirstOrDefault(r => string.Equals(r.Name, name, StringComparison.Ordinal));

    /// <summary>One sandbox by id, or null when it has been removed.</summary>
    public SandboxRecord? FindById(string id) =>
        List().FirstOrDefault(r => string.Equals(r.Id, id, StringComparison.Ordinal));

    /// <summary>Records a state change and what goes with it.</summary>
    public void UpdateState(SandboxRecord record) => Update(record, null);

    /// <summary>
    /// Records a state change only if the stored state and runtime pid are still
    /// <paramref name="expectedState"/> and <paramref name="expectedPid"/>, as they were read:
    /// false when another process changed the sandbox in between, whose account then stands.
    /// </summary>
    public bool TryUpdateState(SandboxRecord record, SandboxState expectedState, int? expectedPid) =>
        Update(record, (expectedState, expectedPid));

    private bool Update(SandboxRecord record, (SandboxState State, int? Pid)? expected)
    {
        using var connection = Open();
        using var update = connection.CreateCommand();
        update.CommandText = """
            UPDATE sandboxes SET state = $state, started_at = $started, runtime_pid = $pid,
                accelerator = $accel, reason = $reason, base_path = $base, attached_pid = $attached
            WHERE id = $id
            """ + (expected is null ? "" : " AND state = $expectedState AND runtime_pid IS $expectedPid");
        update.Parameters.AddWithValue("$id", record.Id);
        update.Parameters.AddWithValue("$state", record.State.ToString());
        update.Parameters.AddWithValue("$started",
            (object?)record.StartedAt?.ToString("O", CultureInfo.InvariantCulture) ?? DBNull.Value);
        update.Parameters.AddWithValue("$pid", (object?)record.RuntimePid ?? DBNull.Value);
        update.Parameters.AddWithValue("$accel", (object?)record.Accelerator ?? DBNull.Value);
        update.Parameters.AddWithValue("$reason", (object?)record.Reason ?? DBNull.Value);
        update.Parameters.AddWithValue("$base", (object?)record.BasePath ?? DBNull.Value);
        update.Parameters.AddWithValue("$attached", (object?)record.AttachedPid ?? DBNull.Value);
        if (expected is var (state, pid))
        {
            update.Parameters.AddWithValue("$expectedState", state.ToString());
            update.Parameters.AddWithValue("$expectedPid", (object?)pid ?? DBNull.Value);
        }

        return update.ExecuteNonQuery() > 0;
    }

    /// <summary>Deletes a sandbox and its labels.</summary>
    public void Delete(string id)
    {
        using var connection = Open();
        using var delete = connection.CreateCommand();
        delete.CommandText = "DELETE FROM sandboxes WHERE id = $id";
        delete.Parameters.AddWithValue("$id", id);
        delete.ExecuteNonQuery();
    }

    // Null in rows written before the column existed.
    private static List<string> ReadList(SqliteDataReader reader, int ordinal) =>
        reader.IsDBNull(ordinal) ? [] : JsonSerializer.Deserialize<List<string>>(reader.GetString(ordinal)) ?? [];

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        Execute(connection, "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;");
        return connection;
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
