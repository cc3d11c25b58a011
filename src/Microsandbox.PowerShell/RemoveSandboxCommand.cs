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
            if (Confirmed(target.Name))
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

    /// <summary>
    /// -Force skips the prompt, unless -Confirm or -WhatIf was asked for explicitly; -WhatIf in
    /// effect from a caller ($WhatIfPreference, a function called with -WhatIf) is still honoured,
    /// so a dry run never removes anything.
    /// </summary>
    private bool Confirmed(string name)
    {
        bool asked = MyInvocation.BoundParameters.ContainsKey("Confirm")
            || MyInvocation.BoundParameters.ContainsKey("WhatIf");
        bool dryRun = LanguagePrimitives.IsTrue(SessionState.PSVariable.GetValue("WhatIfPreference"));
        return (Force && !asked && !dryRun) || ShouldProcess(name, "Remove sandbox");
    }
}
