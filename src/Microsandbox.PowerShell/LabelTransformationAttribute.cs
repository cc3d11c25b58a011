using System.Collections;
using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Lets <c>-Label</c> take a hashtable (<c>@{ tier = 'web' }</c>), <c>key=value</c> strings, or
/// bare keys (<c>-Label gpu</c>, stored as <c>gpu=""</c> as Docker does).
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class LabelTransformationAttribute : ArgumentTransformationAttribute
{
    /// <inheritdoc/>
    public override object Transform(EngineIntrinsics engineIntrinsics, object inputData)
    {
        object value = inputData is PSObject pso ? pso.BaseObject : inputData;
        if (value is IDictionary)
        {
            return value;
        }

        var table = new Hashtable(StringComparer.Ordinal);
        IEnumerable items = value is string text ? new[] { text } : value as IEnumerable ?? new[] { value };
        foreach (object? item in items)
        {
            object? raw = item is PSObject p ? p.BaseObject : item;
            if (raw is IDictionary nested)
            {
                foreach (DictionaryEntry entry in nested)
                {
                    table[entry.Key] = entry.Value;
                }

                continue;
            }

            var (key, text2) = SandboxRules.ParseLabel(raw?.ToString() ?? "");
            table[key] = text2;
        }

        return table;
    }
}
