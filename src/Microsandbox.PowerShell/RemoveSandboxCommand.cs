using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Removes sandboxes and everything they stored.</para>
/// <para type="description">Deletes each sandbox's record and folder. A running sandbox is refused unless -Force is given, which kills it first. Many sandboxes are removed at once, and each failure is reported on its own.</para>
/// </summary>
[Cmdlet(VerbsCommon.Remove, "Sandbox", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High,
    DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveSandboxCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Remove running sandboxes too, killing their VMs first; also suppresses the confirmation prompt.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (Sandbox target in Targets())
        {
            if (ShouldProcessUnlessForced(Force, target.Name, "Remove sandbox"))
            {
                Enqueue(target);
            }
        }
    }

    /// <inheritdoc/>
    protected override void EndProcessing() =>
        RunQueued(async (s, progress, token) =>
        {
            progress.Report(new(SandboxMessageLevel.Verbose, $"Removing sandbox '{s.Name}'."));
            await Engine.RemoveAsync(s.Name, Force, progress, token).ConfigureAwait(false);
            return null;
        });
}
