using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// The distribution project's own registry (Debian's docker-registry package) run on a loopback
/// port with storage in a temp folder, killed and deleted on dispose. Missing or failing to start
/// is an error, never a skipped test.
/// </summary>
internal sealed class RegistryServer : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private RegistryServer(string root, int port, Process process)
    {
        Root = root;
        Port = port;
        _process = process;
    }

    /// <summary>The temp folder holding the config and the storage.</summary>
    public string Root { get; }

    public int Port { get; }

    /// <summary>The registry as a reference names it.</summary>
    public string Host => $"127.0.0.1:{Port}";

    public string StorageRoot => Path.Join(Root, "storage");

    /// <summary>What the registry printed so far, for failure messages.</summary>
    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>The file in which the registry keeps a blob's bytes (manifests are blobs too).</summary>
    public string BlobDataPath(string digest)
    {
        string hex = digest["sha256:".Length..];
        return Path.Join(StorageRoot, "docker", "registry", "v2", "blobs", "sha256", hex[..2], hex, "data");
    }

    /// <summary>Runs a setup step, adding what the registry logged to its failure.</summary>
    public async Task SetUpAsync(string what, Func<Task> step)
    {
        try
        {
            await step();
        }
        catch (Exception e)
        {
            throw new InvalidOperationException($"{what} failed; the registry logged:\n{Log}", e);
        }
    }

    /// <summary>Starts a registry; <paramref name="authYaml"/> is its <c>auth:</c> section.</summary>
    public static async Task<RegistryServer> StartAsync(string? authYaml = null)
    {
        string binary = FindBinary();
        string root = Directory.CreateTempSubdirectory("msb-registry-").FullName;
        int port = FreePort();
        string config = Path.Join(root, "config.yml");
        var yaml = new StringBuilder()
            .AppendLine("version: 0.1")
            .AppendLine("log:")
            .AppendLine("  level: warn")
            .AppendLine("  accesslog:")
            .AppendLine("    disabled: true")
            .AppendLine("storage:")
            .AppendLine("  filesystem:")
            .AppendLine($"    rootdirectory: {Path.Join(root, "storage")}")
            .AppendLine("  delete:")
            .AppendLine("    enabled: true")
            .AppendLine("http:")
            .AppendLine($"  addr: 127.0.0.1:{port}")
            .AppendLine($"  secret: {Guid.NewGuid():N}");
        if (authYaml is not null)
        {
            yaml.AppendLine("auth:").Append(authYaml);
        }

        File.WriteAllText(config, yaml.ToString());

        var start = new ProcessStartInfo(binary, ["serve", config])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        var process = Process.Start(start) ?? throw new InvalidOperationException($"{binary} did not start.");
        var server = new RegistryServer(root, port, process);
        process.OutputDataReceived += (_, e) => server.Append(e.Data);
        process.ErrorDataReceived += (_, e) => server.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await server.WaitUntilServingAsync();
        }
        catch
        {
            server.Dispose();
            throw;
        }

        return server;
    }

    /// <summary>A loopback port that nothing listens on (just released by the kernel).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // It has exited in between.
        }

        _process.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A temp folder left behind is harmless; a failing dispose would hide the test's result.
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            _log.AppendLine(line);
        }
    }

    private async Task WaitUntilServingAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(20))
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException(
                    $"docker-registry exited with {_process.ExitCode} before serving:\n{Log}");
            }

            try
            {
                using var response = await http.GetAsync(new Uri($"http://{Host}/v2/"));
                if (response.StatusCode is HttpStatusCode.OK or HttpStatusCode.Unauthorized)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException)
            {
                // Not answering yet.
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"docker-registry did not serve /v2/ on {Host} within 20 s:\n{Log}");
    }

    private static string FindBinary()
    {
        foreach (string folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
            .Append("/usr/bin"))
        {
            string candidate = Path.Join(folder, "docker-registry");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException(
            "docker-registry is not installed: these tests need Debian's docker-registry package "
            + "(apt-get install docker-registry), which ./build.ps1 Bootstrap installs.");
    }
}
