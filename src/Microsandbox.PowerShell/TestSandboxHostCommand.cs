using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Checks that this host can run sandboxes.</para>
/// <para type="description">Reports on QEMU, the accelerator (KVM, or TCG emulation and why), the guest assets, the sandbox runtime and the sandbox home, each with a fix hint when it needs one.</para>
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "SandboxHost")]
[OutputType(typeof(HostCheck), typeof(bool))]
public sealed class TestSandboxHostCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">Return only $true when nothing failed, $false otherwise.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Quiet { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        IReadOnlyList<HostCheck> checks = Run((_, token) => HostCheck.RunAsync(token));
        if (Quiet)
        {
            WriteObject(checks.All(c => c.Status != HostCheckStatus.Fail));
            return;
        }

        WriteObject(checks, enumerateCollection: true);
    }
}
