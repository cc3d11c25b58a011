using System.Diagnostics;
using Microsandbox.Engine;
using Microsoft.Data.Sqlite;

namespace Microsandbox.Tests.Engine;

/// <summary>
/// Tests that set process-wide environment variables (MSB_*) run here, one at a time and never
/// beside another collection.
/// </summary>
[CollectionDefinition("Environment", DisableParallelization = true)]
public sealed class EnvironmentGroup
{
    /// <summary>The environment variables the engine reads.</summary>
    internal static readonly string[] EngineVariables = ["MSB_GUEST_DIR", "MSB_RUNTIME_PATH", "MSB_QEMU", "MSB_ACCEL"];
}

/// <summary>Sets environment variables and puts the old values back on dispose.</summary>
internal sealed class EnvironmentScope : IDisposable
{
    private readonly Dictionary<string, string?> _saved = new(StringComparer.Ordinal);

    /// <summary>A scope in which every engine variable starts unset.</summary>
    public static EnvironmentScope Clean()
    {
        var scope = new EnvironmentScope();
        foreach (string name in EnvironmentGroup.EngineVariables)
        {
            scope.Set(name, null);
        }

        return scope;
    }

    public EnvironmentScope Set(string name, string? value)
    {
        _saved.TryAdd(name, Environment.GetEnvironmentVariable(name));
        Environment.SetEnvironmentVariable(name, value);
        return this;
    }

    public void Dispose()
    {
        foreach (var (name, value) in _saved)
        {
            Environment.SetEnvironmentVariable(name, value);
        }
    }
}

/// <summary>A fresh home in a temp folder, deleted (with anything started in it) on dispose.</summary>
internal sealed class TempHome : IDisposable
{
    private readonly List<Process> _processes = [];

    public TempHome()
    {
        Root = Directory.CreateTempSubdirectory("msb-engine-").FullName;
        Home = new SandboxHome(Path.Join(Root, "home"));
        Scratch = Path.Join(Root, "scratch");
        Directory.CreateDirectory(Scratch);
    }

    /// <summary>The temp folder; the home and the scratch folder are inside it.</summary>
    public string Root { get; }

    public SandboxHome Home { get; }

    /// <summary>A folder outside the home for fake assets and scripts.</summary>
    public string Scratch { get; }

    /// <summary>A record as CreateAsync would make it, placed in this home.</summary>
    public SandboxRecord NewRecord(
        string name,
        IReadOnlyDictionary<string, string>? labels = null,
        SandboxState state = SandboxState.Created,
        int? runtimePid = null,
        string image = SandboxOptions.DefaultImage)
    {
        string id = Guid.NewGuid().ToString("N")[..16];
        return new SandboxRecord
        {
            Id = id,
            Name = name,
            Image = image,
            Cpus = 1,
            MemoryMB = 512,
            Shell = "/bin/sh",
            WorkingDirectory = "/",
            Environment = new Dictionary<string, string>(StringComparer.Ordinal),
            Labels = labels ?? new Dictionary<string, string>(StringComparer.Ordinal),
            CreatedAt = DateTimeOffset.UtcNow,
            Directory = Home.SandboxDirectory(id),
            State = state,
            RuntimePid = runtimePid,
        };
    }

    /// <summary>Writes an executable shell script.</summary>
    public string WriteScript(string name, string body)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("The engine tests need a Unix host.");
        }

        string path = Path.Join(Scratch, name);
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    /// <summary>
    /// A guest folder holding (empty) kernel and initramfs files and a real, tiny default image
    /// layer, since the engine builds the sandbox's EROFS base from it before starting a runtime.
    /// </summary>
    public string FakeGuestDirectory()
    {
        string dir = Path.Join(Scratch, "guest");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Join(dir, "vmlinuz"), "");
        File.WriteAllText(Path.Join(dir, "initramfs.img"), "");
        using (var tar = new System.Formats.Tar.TarWriter(File.Create(Path.Join(dir, "rootfs.tar"))))
        {
            tar.WriteEntry(new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.Directory, "etc/"));
        }

        return dir;
    }

    /// <summary>
    /// Starts a long-lived process that looks like the runtime of the sandbox whose spec is at
    /// <paramref name="specPath"/>: program msb-runtime, first argument the spec (a copy of tail
    /// following the spec file). It is killed on dispose.
    /// </summary>
    public Process StartFakeRuntime(string specPath)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(specPath)!);
        File.WriteAllText(specPath, "{}");
        string dir = Path.Join(Scratch, "live-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        string path = Path.Join(dir, "msb-runtime");
        File.Copy("/usr/bin/tail", path);
        var info = new ProcessStartInfo(path) { UseShellExecute = false };
        info.ArgumentList.Add(specPath);
        info.ArgumentList.Add("-f");
        var process = Process.Start(info) ?? throw new InvalidOperationException("tail did not start");
        _processes.Add(process);
        return process;
    }

    /// <summary>The pid of a process that has run and exited.</summary>
    public static int DeadPid()
    {
        using var process = Process.Start(new ProcessStartInfo("/bin/true") { UseShellExecute = false })
            ?? throw new InvalidOperationException("true did not start");
        process.WaitForExit();
        return process.Id;
    }

    /// <summary>A connection to the state database outside the StateStore, for checks it cannot make.</summary>
    public SqliteConnection OpenDatabase()
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = Home.DatabasePath,
            Pooling = false,
        }.ToString());
        connection.Open();
        return connection;
    }

    public long Scalar(string sql)
    {
        using var connection = OpenDatabase();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        foreach (Process process in _processes)
        {
            try
            {
                if (!process.HasExited)
                {
                    process.Kill();
                    process.WaitForExit();
                }
            }
            catch (InvalidOperationException)
            {
                // Already gone.
            }

            process.Dispose();
        }

        Directory.Delete(Root, recursive: true);
    }
}
