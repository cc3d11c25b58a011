using System.Text.Json;

namespace Microsandbox.Engine;

/// <summary>How a host check came out.</summary>
public enum HostCheckStatus
{
    /// <summary>Ready.</summary>
    Pass,

    /// <summary>Works, with a limit worth knowing (for example emulation instead of KVM).</summary>
    Warning,

    /// <summary>Sandboxes cannot run until this is fixed.</summary>
    Fail,
}

/// <summary>One finding of <see cref="HostCheck.RunAsync"/>.</summary>
public sealed class HostCheck
{
    private HostCheck(string check, HostCheckStatus status, string detail, string? hint)
    {
        Check = check;
        Status = status;
        Detail = detail;
        Hint = hint;
    }

    /// <summary>What was checked.</summary>
    public string Check { get; }

    /// <summary>The outcome.</summary>
    public HostCheckStatus Status { get; }

    /// <summary>What was found.</summary>
    public string Detail { get; }

    /// <summary>How to fix it, when it needs fixing.</summary>
    public string? Hint { get; }

    /// <summary>
    /// Checks everything a sandbox needs on this host: QEMU, the accelerator, the guest assets, the
    /// runtime, and a writable home with a working state store.
    /// </summary>
    public static async Task<IReadOnlyList<HostCheck>> RunAsync(CancellationToken cancellationToken)
    {
        var checks = new List<HostCheck>();
        SandboxHome? home = null;
        try
        {
            home = SandboxHome.FromEnvironment();
            string probe = Path.Join(home.Root, $".write-test-{Environment.ProcessId}");
            await File.WriteAllTextAsync(probe, "ok", cancellationToken).ConfigureAwait(false);
            File.Delete(probe);
            _ = new StateStore(home);
            checks.Add(new("Home", HostCheckStatus.Pass, $"{home.Root} is writable and its state database opens.", null));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SandboxException
            or Microsoft.Data.Sqlite.SqliteException)
        {
            checks.Add(new("Home", HostCheckStatus.Fail, $"The sandbox home is not usable: {ex.Message}",
                "Set MSB_HOME to a folder you can write, or fix the permissions of ~/.microsandbox."));
        }

        Qemu? qemu = Qemu.Find();
        checks.Add(qemu is null
            ? new("QEMU", HostCheckStatus.Fail, "qemu-system-x86_64 was not found on PATH or at MSB_QEMU.",
                Qemu.InstallHint)
            : new("QEMU", HostCheckStatus.Pass, $"QEMU {qemu.Version} at {qemu.Path}.", null));

        GuestAssets assets = GuestAssets.Locate();
        checks.Add(assets.GuestPresent
            ? new("GuestAssets", HostCheckStatus.Pass, $"Guest kernel {GuestKernelVersion(assets)} and initramfs in {assets.Directory}.", null)
            : new("GuestAssets", HostCheckStatus.Fail, $"The guest kernel or initramfs is missing from {assets.Directory}.",
                "Reinstall the module, or run './build.ps1 Guest' in a source checkout."));
        checks.Add(assets.RuntimePresent
            ? new("Runtime", HostCheckStatus.Pass, $"Sandbox runtime at {assets.RuntimePath}.", null)
            : new("Runtime", HostCheckStatus.Fail, $"The sandbox runtime is missing at {assets.RuntimePath}.",
                "Reinstall the module, or run './build.ps1 Build' in a source checkout."));

        if (qemu is not null && assets.GuestPresent && home is not null)
        {
            AcceleratorChoice accel = await AcceleratorProbe.ResolveAsync(home, qemu, assets, cancellationToken)
                .ConfigureAwait(false);
            checks.Add(accel.IsEmulated
                ? new("Accelerator", HostCheckStatus.Warning, $"TCG emulation: {accel.Reason}.",
                    "Sandboxes work, but boot and run several times slower than with KVM. Enable " +
                    "hardware virtualisation (or nested virtualisation) to use KVM.")
                : new("Accelerator", HostCheckStatus.Pass, $"KVM: {accel.Reason}.", null));
        }
        else
        {
            checks.Add(new("Accelerator", HostCheckStatus.Fail,
                "Not probed: it needs QEMU, the guest assets and a usable home, and one of them failed.",
                "Fix the failures above first."));
        }

        return checks;
    }

    private static string GuestKernelVersion(GuestAssets assets)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Join(assets.Directory, "guest.json")));
            return doc.RootElement.TryGetProperty("kernelVersion", out var v) ? v.GetString() ?? "?" : "?";
        }
        catch (Exception ex) when (ex is IOException or JsonException)
        {
            return "(version unknown)";
        }
    }
}
